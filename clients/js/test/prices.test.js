// Exact prices: every price of a server message reaches the application
// as its decimal text, digit for digit, whatever JSON.parse would round.

import assert from "node:assert/strict";
import test from "node:test";

import { parseMessage, quotePrices } from "../src/index.js";

test("prices keep every digit a float would lose", () => {
  const msg = parseMessage('{"type":"tick","sym":"X","seq":7,"px":9999999999.99999999,"bid":-0.00000001,"ask":1e-4,"size":3,"ts":1732250000123456789}');
  assert.equal(msg.px, "9999999999.99999999");
  assert.equal(msg.bid, "-0.00000001");
  assert.equal(msg.ask, "1e-4");
  assert.equal(msg.seq, 7);
  assert.equal(msg.size, 3);
  assert.equal(typeof msg.ts, "number");
});

test("every tick of a batch has its prices as text", () => {
  const msg = parseMessage('{"type":"ticks","data":[{"type":"tick","sym":"A","seq":1,"px":187.2,"bid":187.19,"ask":187.21,"size":1,"ts":1},{"type":"tick","sym":"B","seq":2,"px":100,"bid":99.99,"ask":100.01,"size":2,"ts":2}]}');
  assert.deepEqual(msg.data.map((t) => [t.px, t.bid, t.ask]), [["187.2", "187.19", "187.21"], ["100", "99.99", "100.01"]]);
});

test("spacing, null prices and GET /symbols rows", () => {
  const rows = parseMessage('[{"sym":"A","seq":0,"px":null,"bid":null,"ask":null},{ "sym" : "B", "px" :\n 64123.5 , "bid":"1.5"}]');
  assert.equal(rows[0].px, null);
  assert.equal(rows[1].px, "64123.5");
  assert.equal(rows[1].bid, "1.5");
});

test("text inside strings is left alone, escapes included", () => {
  const text = '{"type":"error","code":"bad_json","message":"at «{\\"px\\":1.5}» \\\\\\"px\\":2 and \\\\","px":3.25}';
  const msg = parseMessage(text);
  assert.equal(msg.message, 'at «{"px":1.5}» \\"px":2 and \\');
  assert.equal(msg.px, "3.25");
  // A key that only ends like a price key is not one.
  assert.equal(parseMessage('{"xpx":1.5,"askx":2}').xpx, 1.5);
});

test("text that is not JSON is refused as JSON.parse refuses it", () => {
  assert.throws(() => parseMessage('{"px":1.5'), SyntaxError);
  assert.throws(() => parseMessage('{"px":"unterminated'), SyntaxError);
  assert.equal(quotePrices('{"px'), '{"px');
});

test("a large batch, and thousands of escapes, keep every price as text", () => {
  const tick = '{"type":"tick","sym":"AAPL","seq":42,"px":187.25,"bid":187.24,"ask":187.26,"size":300,"ts":1732250000123456789}';
  const text = `{"type":"ticks","data":[${Array(20_000).fill(tick).join(",")}]}`;
  const msg = parseMessage(text);
  assert.equal(msg.data.length, 20_000);
  assert.ok(msg.data.every((t) => t.px === "187.25" && t.bid === "187.24" && t.ask === "187.26"));
  // Backslashes and escaped quotes inside a string do not end it early.
  const hostile = `{"message":"${"\\\\".repeat(100_000)}${'\\"'.repeat(100_000)}","px":1}`;
  assert.equal(parseMessage(hostile).px, "1");
});
