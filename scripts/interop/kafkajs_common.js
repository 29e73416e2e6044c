// Shared by the kafkajs interop scripts: one JSON line per step on stdout
// (read by common.run_kafkajs), and the produce-then-consume round trip.
function report(step, ok, detail) {
  console.log(JSON.stringify({ step, ok: Boolean(ok), detail: detail ? String(detail) : "" }));
}

// Produces `messages` to `topic`, then reads them back from the beginning
// in group `groupId` (at most 30 s); reports both steps, naming `label`.
async function roundTrip(kafka, topic, messages, groupId, label) {
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  await producer.send({ topic, messages: messages.map((value) => ({ value })) });
  await producer.disconnect();
  report(`produce ${messages.length} ${label}`, true);
  const got = await consumeAll(kafka, topic, groupId, messages.length);
  report(`consume ${messages.length} back ${label}`, JSON.stringify(got) === JSON.stringify(messages),
    `${got.length} received`);
}

// Reads `topic` from the beginning in group `groupId` until `count`
// values arrived (at most 30 s), then `settleMs` more (a value arriving
// late would show); returns the values.
async function consumeAll(kafka, topic, groupId, count, settleMs = 0) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  await consumer.run({
    eachMessage: async ({ message }) => {
      got.push(message.value.toString());
      if (got.length >= count) done();
    },
  });
  await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, 30000))]);
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  await consumer.disconnect();
  return got;
}

// Runs `main`, reporting an exception as a failed step; exits when done.
function run(main) {
  main()
    .then(() => process.exit(0))
    .catch((e) => {
      report("ran", false, e && e.stack ? e.stack : e);
      process.exit(1);
    });
}

module.exports = { consumeAll, report, roundTrip, run };
