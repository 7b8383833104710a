package banner;

/** A snapshot dependency (banner-0.1-SNAPSHOT.jar): it lands in the snapshot-dependencies layer. */
public final class Banner {
    private Banner() {
    }

    public static String around(String text) {
        return "*** " + text + " ***";
    }
}
