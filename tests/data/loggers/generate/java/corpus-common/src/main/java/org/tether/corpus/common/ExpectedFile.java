package org.tether.corpus.common;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** Writes a .expected.jsonl file: one JSON object a line, in logging order. */
public final class ExpectedFile {
  private ExpectedFile() {}

  public static void write(Path path, List<ExpectedLine> lines) throws IOException {
    ObjectMapper mapper = new ObjectMapper();
    List<String> jsonLines = new ArrayList<>();
    for (ExpectedLine line : lines) {
      jsonLines.add(mapper.writeValueAsString(line.toJsonObject()));
    }
    Files.write(path, jsonLines, StandardCharsets.UTF_8);
  }
}
