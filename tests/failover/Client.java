// A JVM HTTP client as found in the field: HttpURLConnection, keep-alive off
// (-Dhttp.keepAlive=false), and the JVM's DNS cache told to keep answers forever
// (networkaddress.cache.ttl=-1 in a -Djava.security.properties file). One request every EVERY
// ms until DEADLINE (epoch ms) or MAX requests. Per request one log line: when it started, the
// address the JVM's cache gives for the host (the one HttpURLConnection connects to) and the
// side that answered (the backend's body names its own address).
//
// usage: java Client URL DEADLINE_MS MAX EVERY_MS LOG
import java.io.FileWriter;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.net.HttpURLConnection;
import java.net.InetAddress;
import java.net.URL;
import java.nio.charset.StandardCharsets;

public class Client {
    public static void main(String[] args) throws Exception {
        URL url = new URL(args[0]);
        long deadline = Long.parseLong(args[1]);
        int max = Integer.parseInt(args[2]);
        long every = Long.parseLong(args[3]);
        long pid = ProcessHandle.current().pid();
        try (PrintWriter log = new PrintWriter(new FileWriter(args[4], true), true)) {
            for (int i = 0; i < max && System.currentTimeMillis() < deadline; i++) {
                long t = System.currentTimeMillis();
                String cached = InetAddress.getByName(url.getHost()).getHostAddress();
                String served;
                try {
                    HttpURLConnection c = (HttpURLConnection) url.openConnection();
                    c.setConnectTimeout(2000);
                    c.setReadTimeout(2000);
                    try (InputStream in = c.getInputStream()) {
                        served = new String(in.readAllBytes(), StandardCharsets.US_ASCII).trim();
                    }
                    c.disconnect();
                } catch (IOException e) {
                    served = "error:" + e.getClass().getSimpleName();
                }
                log.println("ms=" + t + " pid=" + pid + " dns=" + cached + " served=" + served);
                Thread.sleep(every);
            }
        }
    }
}
