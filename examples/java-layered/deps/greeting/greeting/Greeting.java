package greeting;

/** A released dependency (greeting-1.0.jar): it lands in the release-dependencies layer. */
public final class Greeting {
    private Greeting() {
    }

    public static String greet(String greeting, String who) {
        return greeting + ", " + who;
    }
}
