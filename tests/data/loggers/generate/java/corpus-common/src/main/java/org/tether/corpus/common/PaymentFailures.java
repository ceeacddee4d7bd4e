package org.tether.corpus.common;

import java.io.IOException;

/** An exception with a cause, thrown and caught for real so the stack trace has frames. */
public final class PaymentFailures {
  private PaymentFailures() {}

  public static Exception declinedPayment() {
    try {
      callGateway();
      throw new AssertionError("callGateway always throws");
    } catch (IOException timeout) {
      return new IllegalStateException("card declined after gateway timeout", timeout);
    }
  }

  private static void callGateway() throws IOException {
    throw new IOException("gateway did not answer within 2000 ms");
  }
}
