package org.tether.corpus;

import java.io.IOException;
import java.nio.file.Path;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.core.env.Environment;
import org.tether.corpus.common.ExpectedFile;
import org.tether.corpus.common.LineRecorder;

/**
 * Starts a non-web Spring Boot 3 application (Micrometer Tracing over the OpenTelemetry SDK),
 * logs the corpus lines through SLF4J, and writes the expected file.
 *
 * <p>Properties: {@code corpus.variant} picks the output format's key map (the logging format
 * itself is chosen by Spring properties on the command line), {@code corpus.expected-file} is the
 * .expected.jsonl to write.
 */
@SpringBootApplication
public class CorpusApplication {

  public static void main(String[] args) throws IOException {
    try (ConfigurableApplicationContext context =
        SpringApplication.run(CorpusApplication.class, args)) {
      Environment environment = context.getEnvironment();
      Variant variant = Variant.named(environment.getRequiredProperty("corpus.variant"));
      String serviceName =
          variant.writesServiceName()
              ? environment.getRequiredProperty("spring.application.name")
              : null;
      LineRecorder recorder = new LineRecorder(variant.keys(), serviceName);
      context.getBean(CorpusLines.class).logAll(recorder);
      ExpectedFile.write(
          Path.of(environment.getRequiredProperty("corpus.expected-file")), recorder.lines());
    }
  }
}
