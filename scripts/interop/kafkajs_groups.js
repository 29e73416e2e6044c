// kafkajs 2.x against the broker: create a topic, produce N messages,
// consume FIRST in a group and commit, then a new consumer in the same
// group must resume at offset FIRST. Prints one JSON line per step.
// usage: node kafkajs_groups.js HOST:PORT N FIRST   (NODE_PATH has kafkajs)
const { Kafka, logLevel } = require("kafkajs");

const [addr, nArg, firstArg] = process.argv.slice(2);
const n = Number(nArg);
const first = Number(firstArg);
const topic = "kafkajs-groups";
const groupId = "kafkajs-group";
const kafka = new Kafka({ clientId: "interop-kafkajs", brokers: [addr], logLevel: logLevel.NOTHING });
const messages = Array.from({ length: n }, (_, i) => `msg-${String(i).padStart(3, "0")}`);

const { report } = require("./kafkajs_common");

// Consumes until `count` messages arrived (or 30 s passed), committing the
// position after the last one; returns [offset, value] pairs.
async function consume(count) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      if (got.length >= count) return;
      got.push([Number(message.offset), message.value.toString()]);
      if (got.length === count) {
        await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }]);
        done();
      }
    },
  });
  await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, 30000))]);
  await consumer.disconnect();
  return got;
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  await admin.disconnect();
  report("CreateTopics", created);

  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages: messages.map((value) => ({ value })) });
  await producer.disconnect();
  report("produce 100", true);

  const firstRun = await consume(first);
  report(
    "consume 60 in a group and commit",
    JSON.stringify(firstRun.map((r) => r[1])) === JSON.stringify(messages.slice(0, first)),
    JSON.stringify(firstRun.slice(0, 3)),
  );
  const secondRun = await consume(n - first);
  report(
    "restarted member resumes at offset 60",
    secondRun.length > 0 && secondRun[0][0] === first &&
      JSON.stringify(secondRun.map((r) => r[1])) === JSON.stringify(messages.slice(first)),
    JSON.stringify(secondRun.slice(0, 3)),
  );
}

main().then(
  () => process.exit(0),
  (e) => {
    report("no client error", false, e && e.stack ? e.stack : e);
    process.exit(0);
  },
);
