// kafkajs 2.x over mutual TLS: produce N messages to a topic on the SSL
// listener, then read them back from the beginning. Prints one JSON line per
// step. usage: node kafkajs_tls.js HOST:PORT CERT_DIR N  (NODE_PATH has kafkajs)
const fs = require("fs");
const path = require("path");
const { Kafka, logLevel } = require("kafkajs");

const [addr, certs, nArg] = process.argv.slice(2);
const n = Number(nArg);
const topic = "kafkajs-tls";
const read = (name) => fs.readFileSync(path.join(certs, name), "utf8");
const kafka = new Kafka({
  clientId: "interop-kafkajs-tls",
  brokers: [addr],
  logLevel: logLevel.NOTHING,
  ssl: { ca: [read("ca.crt")], cert: read("client.crt"), key: read("client.key"), servername: "localhost" },
});
const messages = Array.from({ length: n }, (_, i) => `tls-${i}`);

function report(step, ok, detail) {
  console.log(JSON.stringify({ step, ok: Boolean(ok), detail: detail ? String(detail) : "" }));
}

async function main() {
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  await producer.send({ topic, messages: messages.map((value) => ({ value })) });
  await producer.disconnect();
  report(`produce ${n} over TLS with a client certificate`, true);

  const consumer = kafka.consumer({ groupId: "kafkajs-tls-group", sessionTimeout: 10000, heartbeatInterval: 500 });
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
  report(`consume ${n} back over TLS`, JSON.stringify(got) === JSON.stringify(messages), `${got.length} received`);
}

main()
  .then(() => process.exit(0))
  .catch((e) => {
    report("ran", false, e && e.stack ? e.stack : e);
    process.exit(1);
  });
