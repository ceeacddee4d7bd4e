package main

import (
	"context"
	"fmt"
	"os"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	_ "time/tzdata" // the zone below must load on machines without tzdata
)

// serverZone is the local zone the loggers run in. A non-UTC zone with a half-hour
// offset makes the RFC 3339 timestamps of zerolog, slog and logrus carry "+05:30",
// as they do on servers that are not set to UTC.
const serverZone = "Asia/Kolkata"

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: loggercorpus OUTPUT_DIR")
		os.Exit(2)
	}
	zone, err := time.LoadLocation(serverZone)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	time.Local = zone

	tp := sdktrace.NewTracerProvider() // default sampler: every root span is sampled
	defer func() { _ = tp.Shutdown(context.Background()) }()

	libraries := []Library{zapLibrary, zerologLibrary, zerologUnixLibrary, slogLibrary, logrusLibrary}
	for _, lib := range libraries {
		if err := writeLibrary(os.Args[1], lib, tp); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
