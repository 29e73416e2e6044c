// kafkajs 2.x with SASL: produce N messages as USER and read them back from
// the beginning, then check that a wrong password is refused. Prints one
// JSON line per step.
// usage: node kafkajs_sasl.js HOST:PORT MECHANISM USER PASSWORD CA_FILE|"" N
const fs = require("fs");
const { Kafka, logLevel } = require("kafkajs");

const [addr, mechanism, username, password, ca, nArg] = process.argv.slice(2);
const n = Number(nArg);
const tag = mechanism.toLowerCase().replace(/-/g, "");
const topic = `kafkajs-${tag}`;
const label = `${mechanism} over ${ca ? "SASL_SSL" : "SASL_PLAINTEXT"}`;
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

function report(step, ok, detail) {
  console.log(JSON.stringify({ step, ok: Boolean(ok), detail: detail ? String(detail) : "" }));
}

async function main() {
  const kafka = client(password);
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  await producer.send({ topic, messages: messages.map((value) => ({ value })) });
  await producer.disconnect();
  report(`produce ${n} with ${label}`, true);

  const consumer = kafka.consumer({ groupId: `${topic}-group`, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  await consumer.run({
    eachMessage: async ({ message }) => {
      got.push(message.value.toString());
      if (got.length >= n) done();
    },
  });
  await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, 30000))]);
  await consumer.disconnect();
  report(`consume ${n} back with ${label}`, JSON.stringify(got) === JSON.stringify(messages), `${got.length} received`);

  const wrong = client("not-the-password").producer();
  try {
    await wrong.connect();
    report(`a wrong ${mechanism} password is refused`, false, "connected");
    await wrong.disconnect();
  } catch (e) {
    report(`a wrong ${mechanism} password is refused`, /SASL|[Aa]uthentication/.test(String(e)), e);
  }
}

main()
  .then(() => process.exit(0))
  .catch((e) => {
    report("ran", false, e && e.stack ? e.stack : e);
    process.exit(1);
  });
