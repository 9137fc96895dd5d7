// Tool calling in the OpenAI layer, without a model: requests with tools,
// tool_calls and tool turns rendered through the Qwen3 template; the
// <tool_call> blocks of an output parsed into calls, whole or streamed;
// the shapes of the answers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "server/openai_api.h"

namespace lclm::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

const json kWeather = json::parse(R"({"type": "function", "function": {"name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})");

std::function<std::string()> counter_ids() {
  auto n = std::make_shared<int>(0);
  return [n] { return "call_" + std::to_string((*n)++); };
}

TEST(ToolCallParser, BlocksBecomeCallsAndTheRestStaysContent) {
  ToolCallParser p(counter_ids(), true);
  std::vector<ToolCall> calls;
  const std::string out =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Paris\"}}"
      "\n</tool_call>\n<tool_call>{\"name\": \"f\", \"parameters\": {}}</tool_call>";
  EXPECT_EQ(p.push(out, calls) + p.flush(), "Let me check.\n\n");
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].id, "call_0");
  EXPECT_EQ(calls[0].name, "get_weather");
  EXPECT_EQ(calls[0].arguments, "{\"city\":\"Paris\"}");
  EXPECT_EQ(calls[1].name, "f");
  EXPECT_EQ(calls[1].arguments, "{}");
}

TEST(ToolCallParser, StreamedPiecesGiveTheSameCallsAndHoldBackOnlyWhatMayBeATag) {
  const std::string out =
      "a <tool_c> b <tool_call>{\"name\": \"x\", \"arguments\": \"{\\\"k\\\": 1}\"}</tool_call> c";
  for (std::size_t piece = 1; piece <= 7; ++piece) {
    ToolCallParser p(counter_ids(), true);
    std::vector<ToolCall> calls;
    std::string content;
    for (std::size_t i = 0; i < out.size(); i += piece) {
      const std::string sent = p.push(out.substr(i, piece), calls);
      // Nothing of the block itself is ever sent as content.
      EXPECT_EQ(sent.find("tool_call>"), std::string::npos) << piece;
      content += sent;
    }
    content += p.flush();
    EXPECT_EQ(content, "a <tool_c> b  c") << piece;
    ASSERT_EQ(calls.size(), 1u) << piece;
    EXPECT_EQ(calls[0].arguments, "{\"k\": 1}");  // a string is passed as written
  }
}

TEST(ToolCallParser, MalformedAndUnclosedBlocksStayContent) {
  ToolCallParser p(counter_ids(), true);
  std::vector<ToolCall> calls;
  std::string content = p.push("<tool_call>not json</tool_call> then <tool_call>{\"name\":", calls);
  content += p.flush();
  EXPECT_TRUE(calls.empty());
  EXPECT_EQ(content, "<tool_call>not json</tool_call> then <tool_call>{\"name\":");
  EXPECT_EQ(p.calls(), 0u);
}

TEST(ToolCallParser, WithoutParallelCallsOnlyTheFirstIsKept) {
  ToolCallParser p(counter_ids(), false);
  std::vector<ToolCall> calls;
  p.push("<tool_call>{\"name\": \"a\"}</tool_call><tool_call>{\"name\": \"b\"}</tool_call>", calls);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].name, "a");
}

TEST(ToolCallAnswers, MessageAndChunkShapes) {
  CompletionRequest r;
  r.chat = true;
  r.tools = true;
  r.model = "m";
  const std::vector<ToolCall> calls = {{"call_1", "get_weather", "{\"city\":\"Paris\"}"}};
  const json full = completion_json(r, "chatcmpl-1", 7, {{"\n", "stop", {}, calls}}, {});
  const json& choice = full["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  EXPECT_EQ(choice["message"]["tool_calls"], json::parse(R"([{"id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])"));
  // Choices in order, each with its index, its own finish_reason and calls.
  const json two =
      completion_json(r, "c", 7, {{"Sure.", "stop", {}, calls}, {"plain", "length", {}, {}}}, {});
  ASSERT_EQ(two["choices"].size(), 2u);
  EXPECT_EQ(two["choices"][0]["index"], 0);
  EXPECT_EQ(two["choices"][0]["message"]["content"], "Sure.");
  EXPECT_EQ(two["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(two["choices"][1]["index"], 1);
  EXPECT_EQ(two["choices"][1]["message"]["content"], "plain");
  EXPECT_EQ(two["choices"][1]["finish_reason"], "length");
  EXPECT_FALSE(two["choices"][1]["message"].contains("tool_calls"));
  const json chunk = tool_call_chunk_json(r, "chatcmpl-1", 7, calls[0], 2);
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["index"], 2);
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(chunk["choices"][0]["index"], 0);
  EXPECT_EQ(tool_call_chunk_json(r, "c", 7, calls[0], 0, 3)["choices"][0]["index"], 3);
}

TEST(Choices, UsageCountsThePromptOnceAndEveryChoicesTokens) {
  CompletionUsage a, b;
  a.prompt_tokens = 40;
  a.cached_tokens = 8;
  a.completion_tokens = 5;
  b.prompt_tokens = 40;
  b.cached_tokens = 0;
  b.completion_tokens = 7;
  const CompletionUsage u = usage_of_choices({a, b});
  EXPECT_EQ(u.prompt_tokens, 40u);
  EXPECT_EQ(u.cached_tokens, 8u);
  EXPECT_EQ(u.completion_tokens, 12u);
  EXPECT_EQ(usage_json(u)["total_tokens"], 52);
}

class ToolRequests : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path config =
        fs::path(LCLM_SOURCE_DIR) / "third_party/qwen3-tokenizer/tokenizer_config.json";
    if (!fs::exists(config)) GTEST_SKIP() << config << " is absent; run scripts/fetch_tokenizer.sh";
    qwen3_ = ChatTemplate::from_tokenizer_config(config);
  }
  CompletionRequest parse(const json& body) {
    return parse_chat_request(
        ordered_json(body), {}, [](const std::string&) { return std::nullopt; }, qwen3_);
  }
  ChatTemplate qwen3_;
};

TEST_F(ToolRequests, ToolsToolCallsAndToolTurnsGoThroughTheTemplate) {
  // Keys in the order the client wrote them, as tojson shows them.
  const std::string body = R"({"messages": [
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_9", "content": "21 C"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]})";
  const CompletionRequest r = parse_chat_request(
      parse_body(body), {}, [](const std::string&) { return std::nullopt; }, qwen3_);
  EXPECT_TRUE(r.tools);
  const ordered_json expected_messages = ordered_json::parse(R"([
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}}, "id": "call_9"}]},
      {"role": "tool", "content": "21 C", "tool_call_id": "call_9"}])");
  const ordered_json tools = parse_body(body)["tools"];
  EXPECT_EQ(r.prompt, qwen3_.render(expected_messages, true, tools));
  EXPECT_NE(r.prompt.find("{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
                          "\"parameters\": {\"type\": \"object\"}}}"),
            std::string::npos)
      << r.prompt;
  EXPECT_NE(r.prompt.find("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                          "\"Paris\"}}\n</tool_call>"),
            std::string::npos)
      << r.prompt;
  EXPECT_NE(r.prompt.find("<|im_start|>user\n<tool_response>\n21 C\n</tool_response><|im_end|>"),
            std::string::npos)
      << r.prompt;
}

TEST_F(ToolRequests, TemplateVariablesAndTheGenerationPrompt) {
  const json messages = json::array({{{"role", "user"}, {"content", "hi"}}});
  EXPECT_EQ(parse({{"messages", messages}}).prompt,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(parse({{"messages", messages}, {"chat_template_kwargs", {{"enable_thinking", false}}}})
                .prompt,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(parse({{"messages", messages}, {"add_generation_prompt", false}}).prompt,
            "<|im_start|>user\nhi<|im_end|>\n");
  // tool_choice "none": the model is not shown the tools.
  const CompletionRequest none =
      parse({{"messages", messages}, {"tools", json::array({kWeather})}, {"tool_choice", "none"}});
  EXPECT_FALSE(none.tools);
  EXPECT_EQ(none.prompt.find("<tools>"), std::string::npos);
}

TEST_F(ToolRequests, BadToolFieldsAndTemplateErrorsAre400s) {
  const json messages = json::array({{{"role", "user"}, {"content", "hi"}}});
  const auto error = [&](const json& body) {
    try {
      parse(body);
    } catch (const RequestError& e) {
      return e.param + " " + e.code;
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error({{"messages", messages}, {"tools", json::array({{{"type", "function"}}})}}),
            "tools[0].function invalid_type");
  EXPECT_EQ(error({{"messages", messages}, {"tools", {{"a", 1}}}}), "tools invalid_type");
  EXPECT_EQ(error({{"messages", messages}, {"chat_template_kwargs", "x"}}),
            "chat_template_kwargs invalid_type");
  EXPECT_EQ(error({{"messages", messages}, {"parallel_tool_calls", 1}}),
            "parallel_tool_calls invalid_type");
  json bad_call = messages;
  bad_call.push_back({{"role", "assistant"},
                      {"tool_calls", json::array({{{"function", {{"arguments", "{}"}}}}})}});
  EXPECT_EQ(error({{"messages", bad_call}}),
            "messages[1].tool_calls[0].function.name invalid_type");

  const fs::path dir = fs::path(LCLM_BINARY_DIR) / "openai_tools_test";
  fs::create_directories(dir);
  std::ofstream(dir / "strict.jinja")
      << "{% if messages[0].role != 'system' %}{{ raise_exception('a system message comes first') "
         "}}{% endif %}";
  const ChatTemplate strict = ChatTemplate::from_file(dir / "strict.jinja", dir / "absent.json");
  try {
    parse_chat_request(
        ordered_json({{"messages", messages}}), {}, [](const std::string&) { return std::nullopt; },
        strict);
    FAIL() << "no error";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "chat_template_error");
    EXPECT_NE(std::string(e.what()).find("a system message comes first"), std::string::npos);
  }
}

}  // namespace
}  // namespace lclm::server
