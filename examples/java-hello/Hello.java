import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

/** A tiny HTTP server on the JDK's built-in httpserver: greets and answers /health. */
public final class Hello {
    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/health", exchange -> reply(exchange, "ok\n"));
        server.createContext("/", exchange -> {
            String environment = System.getenv().getOrDefault("IMAGEBUILD_ENV", "unknown");
            String greeting = System.getenv().getOrDefault("GREETING", "Hello");
            boolean banner = "on".equals(System.getenv("FEATURE_BANNER"));
            reply(exchange, greeting + " from Java (environment " + environment
                    + (banner ? ", banner on" : "") + ")\n");
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(1)));
        server.start();
        System.out.println("listening on port " + port);
    }

    private static void reply(HttpExchange exchange, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        exchange.sendResponseHeaders(200, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }
}
