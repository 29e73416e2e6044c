// kafkajs 2.x over mutual TLS: produce N messages to a topic on the SSL
// listener, then read them back from the beginning. Prints one JSON line per
// step. usage: node kafkajs_tls.js HOST:PORT CERT_DIR N  (NODE_PATH has kafkajs)
const fs = require("fs");
const path = require("path");
const { Kafka, logLevel } = require("kafkajs");
const { roundTrip, run } = require("./kafkajs_common");

const [addr, certs, nArg] = process.argv.slice(2);
const n = Number(nArg);
const read = (name) => fs.readFileSync(path.join(certs, name), "utf8");
const kafka = new Kafka({
  clientId: "interop-kafkajs-tls",
  brokers: [addr],
  logLevel: logLevel.NOTHING,
  ssl: { ca: [read("ca.crt")], cert: read("client.crt"), key: read("client.key"), servername: "localhost" },
});
const messages = Array.from({ length: n }, (_, i) => `tls-${i}`);

run(() => roundTrip(kafka, "kafkajs-tls", messages, "kafkajs-tls-group", "over TLS with a client certificate"));
