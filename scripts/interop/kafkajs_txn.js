// kafkajs 2.x transactions: a transactional producer commits, aborts and
// commits again over three partitions; a READ_COMMITTED consumer (kafkajs'
// default) must see exactly the committed records. Prints one JSON line
// per step. usage: node kafkajs_txn.js HOST:PORT  (NODE_PATH has kafkajs)
const { Kafka, logLevel } = require("kafkajs");
const { consumeAll, report, run } = require("./kafkajs_common");

const [addr] = process.argv.slice(2);
const topic = "txn-kafkajs";
const kafka = new Kafka({ clientId: "interop-kafkajs-txn", brokers: [addr], logLevel: logLevel.NOTHING });

run(async () => {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] });
  await admin.disconnect();

  const producer = kafka.producer({ transactionalId: "txn-kafkajs", maxInFlightRequests: 1, idempotent: true });
  await producer.connect();
  const committed = [];
  for (const outcome of ["commit", "abort", "commit"]) {
    const txn = await producer.transaction();
    const messages = Array.from({ length: 9 }, (_, i) => ({ value: `${outcome}-${committed.length}-${i}`, partition: i % 3 }));
    await txn.send({ topic, messages });
    if (outcome === "commit") {
      await txn.commit();
      committed.push(...messages.map((m) => m.value));
    } else {
      await txn.abort();
    }
  }
  await producer.disconnect();
  report("commit, abort, commit over 3 partitions", true);

  // A second more: an aborted record arriving late would show.
  const got = await consumeAll(kafka, topic, "txn-kafkajs-reader", committed.length, 1000);
  report("a READ_COMMITTED consumer sees exactly the committed records",
    JSON.stringify([...got].sort()) === JSON.stringify([...committed].sort()), `${got.length} of ${committed.length}`);
});
