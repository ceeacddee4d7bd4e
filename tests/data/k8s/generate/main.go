// Command generate writes the Kubernetes container log fixtures under tests/data/k8s/ with the
// real writers of the runtimes, laid out as the kubelet lays them out:
//
//	var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log
//	var/log/pods/.../<restart>.log.<YYYYMMDD-hhmmss>       (the latest rotation, as the kubelet leaves it)
//	var/log/pods/.../<restart>.log.<YYYYMMDD-hhmmss>.gz    (older rotations, compressed by the kubelet)
//
// CRI lines come from containerd's own CRI log writer (github.com/containerd/containerd
// pkg/cri/io.NewCRILogger, the code containerd 1.7 runs for every container: it prefixes each
// line with its time, stream and P/F tag and cuts lines longer than max_container_log_line_size
// into P partials). Docker json-file lines come from dockerd's own copier and json-file driver
// (github.com/docker/docker daemon/logger.NewCopier, which cuts lines at 16 KiB, and
// daemon/logger/jsonfilelog, which writes {"log","stream","time"} and leaves the "\n" off a
// partial). The rotation (rename to <n>.log.<time>, gzip of the older one) imitates the kubelet's
// container log manager (pkg/kubelet/logs), which is part of k8s.io/kubernetes and not importable
// as a library; its file names follow the kubelet's "20060102-150405" time format.
//
// Run it through regenerate.sh; the times in the lines are the times of that run.
package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	criio "github.com/containerd/containerd/pkg/cri/io"
	"github.com/docker/docker/daemon/logger"
	"github.com/docker/docker/daemon/logger/jsonfilelog"
)

// containerd's default max_container_log_line_size.
const criMaxLineSize = 16 * 1024

// kubelet's rotated file suffix format (pkg/kubelet/logs: timestampFormat).
const rotationTimeFormat = "20060102-150405"

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// signalingFile tells, after each write of the CRI writer, that a line landed, so the generator can
// interleave the two streams in a known order (in a real container they race).
type signalingFile struct {
	mu     sync.Mutex
	f      *os.File
	landed chan struct{}
}

func (s *signalingFile) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.f.Write(p)
	s.mu.Unlock()
	s.landed <- struct{}{}
	return n, err
}

// criContainer is one container's log file written by containerd's CRI writer: a writer per
// stream, as containerd opens for a container's stdout and stderr.
type criContainer struct {
	path   string
	file   *signalingFile
	stdout io.WriteCloser
	stderr io.WriteCloser
	done   []<-chan struct{}
}

func openCRI(path string) *criContainer {
	must(os.MkdirAll(filepath.Dir(path), 0o755))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(err)
	c := &criContainer{path: path, file: &signalingFile{f: f, landed: make(chan struct{}, 64)}}
	out, outDone := criio.NewCRILogger(path, c.file, criio.Stdout, criMaxLineSize)
	errw, errDone := criio.NewCRILogger(path, c.file, criio.Stderr, criMaxLineSize)
	c.stdout, c.stderr, c.done = out, errw, []<-chan struct{}{outDone, errDone}
	return c
}

// write gives `text` to a stream and waits until the writer put `lines` lines into the file.
func (c *criContainer) write(stream io.Writer, text string, lines int) {
	_, err := io.WriteString(stream, text)
	must(err)
	for i := 0; i < lines; i++ {
		<-c.file.landed
	}
	time.Sleep(2 * time.Millisecond) // distinct times
}

// close ends both streams (the container exited); what was left without a newline is written as
// a P line, as containerd does.
func (c *criContainer) close(lines int) {
	must(c.stdout.Close())
	must(c.stderr.Close())
	for i := 0; i < lines; i++ {
		<-c.file.landed
	}
	for _, d := range c.done {
		<-d
	}
	must(c.file.f.Close())
}

// rotate does what the kubelet's container log manager does when a log grows past its limit:
// the file is renamed to <name>.<time> and the runtime reopens a new one; older rotations are
// compressed.
func rotate(path string, at time.Time) string {
	rotated := path + "." + at.UTC().Format(rotationTimeFormat)
	must(os.Rename(path, rotated))
	return rotated
}

func compress(path string) {
	data, err := os.ReadFile(path)
	must(err)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err = zw.Write(data)
	must(err)
	must(zw.Close())
	must(os.WriteFile(path+".gz", buf.Bytes(), 0o644))
	must(os.Remove(path))
}

func jsonLine(fields ...string) string {
	parts := make([]string, 0, len(fields)/2)
	for i := 0; i+1 < len(fields); i += 2 {
		parts = append(parts, fmt.Sprintf("%q:%s", fields[i], fields[i+1]))
	}
	return "{" + strings.Join(parts, ",") + "}\n"
}

func quoted(s string) string { return fmt.Sprintf("%q", s) }

func longMessage(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "item-%05d;", i)
	}
	return b.String()[:n]
}

const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"

func writeCRIPod(root string) {
	dir := filepath.Join(root, "var/log/pods/shop_checkout-6d5f7c9b8d-q7x2m_8e6c2d4a-3f1b-4c7e-9a2d-5b8f1e0c6a73/checkout")
	path := filepath.Join(dir, "0.log")

	// The oldest part: rotated first, compressed at the second rotation.
	c := openCRI(path)
	for i := 0; i < 3; i++ {
		c.write(c.stdout, jsonLine("level", quoted("info"), "msg", quoted(fmt.Sprintf("warming cache %d", i))), 1)
	}
	c.close(0)
	first := rotate(path, time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC))

	c = openCRI(path)
	c.write(c.stdout, jsonLine("level", quoted("info"), "msg", quoted("cache warm"), "service", quoted("checkout-api")), 1)
	c.write(c.stderr, "WARNING: slow disk\n", 1)
	c.close(0)
	rotate(path, time.Date(2026, 12, 5, 10, 15, 0, 0, time.UTC))
	compress(first)

	// The current file.
	c = openCRI(path)
	c.write(c.stdout, jsonLine(
		"ts", quoted("2026-12-05T10:20:00.123456789Z"), "level", quoted("info"), "msg", quoted("order placed"),
		"service", quoted("checkout-api"), "trace_id", quoted(traceID), "span_id", quoted("00f067aa0ba902b7"),
	), 1)
	c.write(c.stdout, jsonLine("level", quoted("debug"), "msg", quoted("no time and no service of its own")), 1)
	c.write(c.stdout, "plain text from the app, no JSON\n", 1)
	// A JSON line longer than max_container_log_line_size: cut into a P partial, and a line of
	// the other stream lands before its end. (The writer reads 4 KiB at a time and cuts once it
	// holds more than the limit: 20 KiB make it write the partial.)
	long := jsonLine("level", quoted("warn"), "msg", quoted(longMessage(24000)), "service", quoted("checkout-api"))
	c.write(c.stdout, long[:20480], 1)
	c.write(c.stderr, jsonLine("level", quoted("error"), "msg", quoted("payment declined"), "trace_id", quoted(traceID)), 1)
	c.write(c.stdout, long[20480:], 1)
	c.write(c.stdout, "\n", 1) // an empty line
	c.write(c.stderr, "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>\n    main()\nValueError: bad input\n", 4)
	c.write(c.stdout, jsonLine("level", quoted("info"), "msg", quoted("caf\u00e9 \u2603 done")), 1)
	c.close(0)

	// The container restarted: restart 1 writes its own file, and exits in the middle of a line.
	c = openCRI(filepath.Join(dir, "1.log"))
	c.write(c.stdout, jsonLine("level", quoted("info"), "msg", quoted("started again")), 1)
	c.write(c.stderr, "panic: runtime error: index out of range [3] with length 3\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/main.go:9 +0x1d\n", 5)
	_, err := io.WriteString(c.stdout, "exiting without a newline")
	must(err)
	c.close(1)
}

func writeDockerPod(root string) {
	dir := filepath.Join(root, "var/log/pods/legacy_billing-api-5b8c7f9d4-wz6km_1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d/api")
	must(os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, "0.log")
	l, err := jsonfilelog.New(logger.Info{
		ContainerID: "3f4e5d6c7b8a", LogPath: path, Config: map[string]string{},
	})
	must(err)
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	copier := logger.NewCopier(map[string]io.Reader{"stdout": outR, "stderr": errR}, l)
	copier.Run()
	lines := 0
	// write gives `text` to a stream and waits until the json-file driver wrote `n` more lines.
	write := func(w io.Writer, text string, n int) {
		_, err := io.WriteString(w, text)
		must(err)
		lines += n
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			data, err := os.ReadFile(path)
			must(err)
			if bytes.Count(data, []byte("\n")) >= lines {
				time.Sleep(2 * time.Millisecond)
				return
			}
			time.Sleep(time.Millisecond)
		}
		must(fmt.Errorf("json-file driver did not write %d lines", lines))
	}
	write(outW, jsonLine("time", quoted("2026-12-05T10:30:00.5+01:00"), "severity", quoted("INFO"),
		"message", quoted("invoice sent"), "trace_id", quoted(traceID), "span_id", quoted("a3ce929d0e0e4736")), 1)
	write(outW, "plain text, written with a CRLF\r\n", 1)
	write(errW, "java.lang.IllegalStateException: no invoice\n\tat billing.Api.send(Api.java:42)\n\tat billing.Main.main(Main.java:7)\n", 3)
	// Longer than the copier's 16 KiB buffer: a partial entry, a stderr line, then the end.
	long := jsonLine("level", quoted("info"), "message", quoted(longMessage(20000)), "service", quoted("billing"))
	write(outW, long[:17000], 1)
	write(errW, jsonLine("level", quoted("error"), "message", quoted("retrying")), 1)
	write(outW, long[17000:], 1)
	write(outW, jsonLine("level", quoted("info"), "message", quoted("\u00fcnicode \"quoted\" <tag>")), 1)
	must(outW.Close())
	must(errW.Close())
	copier.Wait()
	must(l.Close())
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: generate OUTPUT_DIR")
		os.Exit(2)
	}
	root := os.Args[1]
	writeCRIPod(root)
	writeDockerPod(root)
}
