// kafkajs 2.x with SASL: produce N messages as USER and read them back from
// the beginning, then check that a wrong password is refused. Prints one
// JSON line per step.
// usage: node kafkajs_sasl.js HOST:PORT MECHANISM USER PASSWORD CA_FILE|"" N
const fs = require("fs");
const { Kafka, logLevel } = require("kafkajs");
const { report, roundTrip, run } = require("./kafkajs_common");

const [addr, mechanism, username, password, ca, nArg] = process.argv.slice(2);
const n = Number(nArg);
const topic = `kafkajs-${mechanism.toLowerCase().replace(/-/g, "")}`;
const label = `with ${mechanism} over ${ca ? "SASL_SSL" : "SASL_PLAINTEXT"}`;
const client = (pw) =>
  new Kafka({
    clientId: "interop-kafkajs-sasl",
    brokers: [addr],
    logLevel: logLevel.NOTHING,
    ssl: ca ? { ca: [fs.readFileSync(ca, "utf8")], servername: "localhost" } : false,
    sasl: { mechanism: mechanism.toLowerCase(), username, password: pw },
    retry: { retries: 1 },
  });
const messages = Array.from({ length: n }, (_, i) => `${topic}-${i}`);

run(async () => {
  await roundTrip(client(password), topic, messages, `${topic}-group`, label);
  const wrong = client("not-the-password").producer();
  try {
    await wrong.connect();
    report(`a wrong ${mechanism} password is refused`, false, "connected");
    await wrong.disconnect();
  } catch (e) {
    report(`a wrong ${mechanism} password is refused`, /SASL|[Aa]uthentication/.test(String(e)), e);
  }
});
