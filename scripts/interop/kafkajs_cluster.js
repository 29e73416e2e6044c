// kafkajs 2.x against a cluster: bootstrap from one broker, produce N
// messages to TOPIC (spread over its partitions by key, so every leader
// gets some), then read them all back in a group.
// usage: node kafkajs_cluster.js HOST:PORT TOPIC N   (NODE_PATH has kafkajs)
const { Kafka, logLevel } = require("kafkajs");
const { report, consumeAll } = require("./kafkajs_common");

const [addr, topic, nArg] = process.argv.slice(2);
const n = Number(nArg);
const kafka = new Kafka({ clientId: "interop-kafkajs-cluster", brokers: [addr], logLevel: logLevel.NOTHING });
const messages = Array.from({ length: n }, (_, i) => `kafkajs-${String(i).padStart(4, "0")}`);

(async () => {
  try {
    const admin = kafka.admin();
    await admin.connect();
    const cluster = await admin.describeCluster();
    await admin.disconnect();
    report("describeCluster lists 3 brokers", cluster.brokers.length === 3, JSON.stringify(cluster.brokers));
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages: messages.map((value) => ({ key: value, value })) });
    await producer.disconnect();
    report(`produce ${n} over every partition`, true);
    const got = await consumeAll(kafka, topic, "kafkajs-cluster-group", n);
    const mine = got.filter((v) => v.startsWith("kafkajs-")).sort();
    report(`consume ${n} back in a group`, JSON.stringify(mine) === JSON.stringify(messages),
      `${mine.length} of ${n} received`);
  } catch (e) {
    report("no client error", false, e.stack || e);
  }
  process.exit(0);
})();
