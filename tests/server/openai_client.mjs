// The official `openai` npm client (pinned in tests/reference/tokenizer/
// package.json, installed into third_party/node by scripts/fetch_tokenizer.sh)
// against `lclm serve` on loopback, as a user's program would call it.
//
//   node tests/server/openai_client.mjs LCLM_BINARY MODEL_DIR NODE_MODULES
//
// Starts the server on a free port, runs each check, stops the server; exits 1
// with the failed check's message.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import assert from "node:assert/strict";

const [lclm, model, nodeModules] = process.argv.slice(2);
const require = createRequire(path.join(nodeModules, "noop.js"));
const OpenAI = require("openai").default ?? require("openai");

const server = spawn(lclm, ["serve", "-m", model, "--port", "0", "-t", "1", "--api-key", "sk-test"], {
  stdio: ["ignore", "pipe", "pipe"],
});
let log = "";
const port = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error("the server did not start:\n" + log)), 60000);
  const read = (chunk) => {
    log += chunk;
    const m = log.match(/ on http:\/\/[^:]+:(\d+)/);
    if (m) {
      clearTimeout(timer);
      resolve(Number(m[1]));
    }
  };
  server.stdout.on("data", read);
  server.stderr.on("data", read);
  server.on("exit", (code) => reject(new Error(`the server exited with ${code}:\n${log}`)));
});

const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "sk-test", maxRetries: 0 });
const name = path.basename(model);
const checks = [];
const check = (title, fn) => checks.push([title, fn]);

check("models.list names the model", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [name]);
});

check("chat.completions.create answers with usage", async () => {
  const r = await client.chat.completions.create({
    model: name,
    messages: [{ role: "user", content: "Say hello." }],
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
  assert.match(r.id, /^chatcmpl-/);
});

check("a stream gives the same text as the call", async () => {
  const body = { model: name, messages: [{ role: "user", content: "Count to five." }], max_tokens: 12, temperature: 0 };
  const whole = await client.chat.completions.create(body);
  const stream = await client.chat.completions.create({ ...body, stream: true });
  let text = "";
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
});

check("completions.create continues a prompt", async () => {
  const r = await client.completions.create({ model: name, prompt: "The river", max_tokens: 6, temperature: 0 });
  assert.equal(r.object, "text_completion");
  assert.equal(typeof r.choices[0].text, "string");
});

check("logprobs come back in OpenAI's shape", async () => {
  const r = await client.chat.completions.create({
    model: name,
    messages: [{ role: "user", content: "Hi" }],
    max_tokens: 4,
    temperature: 0,
    logprobs: true,
    top_logprobs: 2,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const t of content) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 2);
    assert.ok(t.top_logprobs[0].logprob >= t.logprob - 1e-6);  // greedy: the top one
  }
});

check("response_format json_schema gives JSON of the schema", async () => {
  const schema = {
    type: "object",
    properties: { ok: { type: "boolean" }, size: { enum: ["S", "M", "L"] } },
    required: ["ok", "size"],
    additionalProperties: false,
  };
  let parsed = 0;
  for (let seed = 1; seed <= 4; seed++) {
    const r = await client.chat.completions.create({
      model: name,
      messages: [{ role: "user", content: "Answer in JSON." }],
      max_tokens: 48,
      seed,
      response_format: { type: "json_schema", json_schema: { name: "answer", schema, strict: true } },
    });
    if (r.choices[0].finish_reason !== "stop") continue;
    const doc = JSON.parse(r.choices[0].message.content);
    assert.deepEqual(Object.keys(doc).sort(), ["ok", "size"]);
    assert.equal(typeof doc.ok, "boolean");
    parsed++;
  }
  assert.ok(parsed > 0, "no answer ended within max_tokens");
});

check("tools: a forced call comes back as tool_calls, whole and streamed", async () => {
  const tools = [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "The weather in a city",
        parameters: {
          type: "object",
          properties: { city: { enum: ["Paris", "Oslo"] } },
          required: ["city"],
          additionalProperties: false,
        },
      },
    },
  ];
  let calls = 0;
  for (let seed = 1; seed <= 4; seed++) {
    const body = {
      model: name,
      messages: [{ role: "user", content: "Weather in Paris?" }],
      tools,
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 160,  // the small model writes blanks between the JSON's tokens
      seed,
    };
    const r = await client.chat.completions.create(body);
    if (r.choices[0].finish_reason === "length") continue;  // the JSON may be cut short
    assert.equal(r.choices[0].finish_reason, "tool_calls");
    const call = r.choices[0].message.tool_calls[0];
    assert.equal(call.type, "function");
    assert.match(call.id, /^call_/);
    assert.equal(call.function.name, "get_weather");
    assert.ok(["Paris", "Oslo"].includes(JSON.parse(call.function.arguments).city));
    // The SDK's stream helper assembles the same call from the deltas.
    const stream = client.chat.completions.stream({ ...body, stream: true });
    const final = await stream.finalChatCompletion();
    assert.equal(final.choices[0].finish_reason, "tool_calls");
    assert.equal(final.choices[0].message.tool_calls[0].function.name, "get_weather");
    assert.equal(final.choices[0].message.tool_calls[0].function.arguments, call.function.arguments);
    calls++;
  }
  assert.ok(calls > 0, "no call ended within max_tokens");
});

check("n choices: one per index, each its seed's answer", async () => {
  const body = { model: name, messages: [{ role: "user", content: "Name a colour." }], max_tokens: 6, temperature: 1.2 };
  const r = await client.chat.completions.create({ ...body, n: 2, seed: 7 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  for (const [i, seed] of [[0, 7], [1, 8]]) {
    const alone = await client.chat.completions.create({ ...body, seed });
    assert.equal(r.choices[i].message.content, alone.choices[0].message.content);
  }
  const stream = await client.chat.completions.create({ ...body, n: 2, seed: 7, stream: true });
  const text = ["", ""];
  for await (const chunk of stream) {
    for (const c of chunk.choices) text[c.index] += c.delta?.content ?? "";
  }
  assert.deepEqual(text, r.choices.map((c) => c.message.content));
});

check("errors reach the client as APIError with OpenAI's fields", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: name, messages: [], max_tokens: 4 }),
    (e) => e instanceof OpenAI.APIError && e.status === 400 && typeof e.message === "string",
  );
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
    (e) => e.status === 404 || e.status === 400,
  );
  const unauthorised = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "wrong", maxRetries: 0 });
  await assert.rejects(unauthorised.models.list(), (e) => e.status === 401);
});

let failed = 0;
for (const [title, fn] of checks) {
  try {
    await fn();
    console.log(`ok   ${title}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${title}: ${e.stack ?? e}`);
  }
}
server.kill("SIGTERM");
await new Promise((resolve) => server.on("exit", resolve));
if (failed) {
  console.log(`${failed} of ${checks.length} checks failed; server log:\n${log}`);
  process.exit(1);
}
console.log(`all ${checks.length} checks passed`);
