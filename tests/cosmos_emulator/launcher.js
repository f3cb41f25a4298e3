// Starts @vercel/cosmosdb-server (a Cosmos DB API emulator, in memory) for the tests.
//
//   node launcher.js PORT     prints "ready PORT" once it listens on 127.0.0.1
//
// It exits when its standard input ends: the test run that started it holds
// the other end of that pipe, and the kernel closes it however that process
// ends, kill -9 included. So no emulator outlives its test run.
//
// Two differences from the package's own CLI:
// - HTTPS with keep-alive: the CLI answers "connection: close", and a new TLS
//   handshake per request makes every SDK call about 20x slower.
// - A read of a missing document answers 404 NotFound, as Cosmos DB does.
//   Version 1.0.1 throws a TypeError there and answers 500.
"use strict";

const readDocument = require("@vercel/cosmosdb-server/lib/handler/read-document");
const partitionHeader = require("@vercel/cosmosdb-server/lib/utils/get-partition-from-header");

// Patch before the server's routes are loaded, so that they pick up the wrapper.
const originalRead = readDocument.default;
readDocument.default = (account, req, res, params) => {
  const collection = account.database(params.dbId).collection(params.collId);
  if (collection.read()) {
    const key = partitionHeader.parsePartitionKey(partitionHeader.default(req), params.docId);
    if (!collection.document(params.docId, key).read()) {
      res.statusCode = 404;
      return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
    }
  }
  return originalRead(account, req, res, params);
};

const { createHttpsServer } = require("@vercel/cosmosdb-server");

const port = parseInt(process.argv[2] || "0", 10);
const server = createHttpsServer({ keepAlive: true });
server.keepAliveTimeout = 60000;
server.listen(port, "127.0.0.1", () => {
  console.log(`ready ${server.address().port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
