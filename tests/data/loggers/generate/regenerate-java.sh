#!/usr/bin/env bash
# Rebuilds the Java logger corpus: tests/data/loggers/java-*.jsonl and java-*.expected.jsonl.
#
# Builds the Maven projects in generate/java (versions pinned in their pom.xml files, Java 17),
# runs each generator with its logger writing to stdout (which becomes the .jsonl file, as the
# library wrote it) while the generator itself writes the .expected.jsonl file from what it
# passed to the logger. See generate/java/README.md.
set -euo pipefail

generate_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
java_dir="$generate_dir/java"
corpus_dir="$(dirname "$generate_dir")"
work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

# A zone with an offset, so the formats that write local time show it (+01:00 in winter,
# +02:00 in summer); the expected times are absolute, so any zone works.
timezone="Europe/Berlin"

(cd "$java_dir" && mvn -B -q -Dstyle.color=never package dependency:build-classpath -Dmdep.outputFile=target/classpath.txt)

classpath_of() {
  local module_dir="$java_dir/$1"
  echo "$module_dir/target/classes:$(cat "$module_dir/target/classpath.txt")"
}

# generate LIBRARY COMMAND...: runs COMMAND with EXPECTED set to the expected file it must write,
# checks both files, then replaces the corpus files of LIBRARY.
generate() {
  local library="$1"
  shift
  local lines="$work_dir/$library.jsonl"
  local expected="$work_dir/$library.expected.jsonl"
  EXPECTED="$expected" "$@" >"$lines" 2>"$work_dir/$library.stderr" || {
    cat "$work_dir/$library.stderr" >&2
    echo "$library: generator failed" >&2
    return 1
  }
  local line_count expected_count
  line_count=$(wc -l <"$lines")
  expected_count=$(wc -l <"$expected")
  # stdout must hold only the library's JSON lines, one per expected line.
  if [[ "$line_count" -ne "$expected_count" || "$line_count" -eq 0 ]] || grep -qv '^{.*}$' "$lines"; then
    echo "$library: $line_count output lines for $expected_count expected; stdout was:" >&2
    cat "$lines" >&2
    return 1
  fi
  mv "$lines" "$corpus_dir/$library.jsonl"
  mv "$expected" "$corpus_dir/$library.expected.jsonl"
  echo "$library: $line_count lines"
}

run_spring() {
  local variant="$1"
  shift
  java -Duser.timezone="$timezone" -cp "$(classpath_of spring-logback)" \
    org.tether.corpus.CorpusApplication \
    --corpus.variant="$variant" --corpus.expected-file="$EXPECTED" "$@"
}

run_log4j2() {
  java -Duser.timezone="$timezone" -cp "$(classpath_of log4j2-template)" \
    org.tether.corpus.Log4j2CorpusMain "$EXPECTED"
}

generate java-logstash-logback-encoder \
  run_spring logstash-logback-encoder --logging.config=classpath:logback-logstash-encoder.xml
generate java-spring-boot-ecs run_spring spring-ecs --logging.structured.format.console=ecs
generate java-spring-boot-logstash \
  run_spring spring-logstash --logging.structured.format.console=logstash
generate java-log4j2-json-template-ecs run_log4j2
