package hello;

import banner.Banner;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import greeting.Greeting;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Properties;

/** An HTTP server on the JDK's httpserver, using one released and one snapshot dependency and a resource. */
public final class Hello {
    static final String MESSAGE = "from the classes layer";

    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        Properties properties = new Properties();
        try (InputStream in = Hello.class.getResourceAsStream("/hello.properties")) {
            properties.load(in);
        }
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/health", exchange -> reply(exchange, "ok\n"));
        server.createContext("/", exchange -> {
            String greeting = System.getenv().getOrDefault("GREETING", "Hello");
            String text = Greeting.greet(greeting, properties.getProperty("who")) + " " + MESSAGE;
            reply(exchange, Banner.around(text) + " max-heap=" + Runtime.getRuntime().maxMemory() + "\n");
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
