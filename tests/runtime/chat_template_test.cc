// ChatTemplate against Hugging Face's apply_chat_template (its variables
// rebuilt by tests/runtime/render_template.py from the same
// tokenizer_config.json): the real Qwen3 template over every conversation
// of conversations.json, and the other forms a config can take.
#include "runtime/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/jinja_reference.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using test::Rendered;

ordered_json conversations() {
  std::ifstream in(fs::path(LCLM_SOURCE_DIR) / "tests/runtime/conversations.json");
  return ordered_json::parse(in);
}

// Every conversation with and without a generation prompt, each under
// each set of extra variables; ours and the reference's renderings.
void expect_parity(const fs::path& config, const std::vector<ordered_json>& variable_sets,
                   const std::string& tag) {
  const ChatTemplate chat = ChatTemplate::from_tokenizer_config(config);
  ordered_json cases = ordered_json::array();
  std::vector<Rendered> ours;
  std::vector<std::string> names;
  for (const ordered_json& c : conversations()) {
    for (const bool generation_prompt : {true, false}) {
      for (const ordered_json& variables : variable_sets) {
        const ordered_json tools = c.contains("tools") ? c["tools"] : ordered_json(nullptr);
        cases.push_back({{"config", config.string()},
                         {"messages", c["messages"]},
                         {"tools", tools},
                         {"add_generation_prompt", generation_prompt},
                         {"kwargs", variables}});
        names.push_back(c["name"].get<std::string>() + (generation_prompt ? " +prompt " : " ") +
                        variables.dump());
        try {
          ours.push_back({true, chat.render(c["messages"], generation_prompt, tools, variables)});
        } catch (const jinja::TemplateError& e) {
          ours.push_back({false, e.what()});
        }
      }
    }
  }
  const auto reference = test::render_reference(cases, tag);
  if (!reference) GTEST_SKIP() << "python3-jinja2 is not installed";
  ASSERT_EQ(reference->size(), ours.size());
  std::size_t rendered = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    test::expect_same(ours[i], (*reference)[i], names[i]);
    rendered += ours[i].ok;
  }
  EXPECT_GT(rendered, ours.size() * 9 / 10);
}

TEST(ChatTemplateParity, Qwen3) {
  const fs::path config =
      fs::path(LCLM_SOURCE_DIR) / "third_party/qwen3-tokenizer/tokenizer_config.json";
  if (!fs::exists(config)) GTEST_SKIP() << config << " is absent; run scripts/fetch_tokenizer.sh";
  const ChatTemplate chat = ChatTemplate::from_tokenizer_config(config);
  EXPECT_FALSE(chat.is_chatml());
  EXPECT_NE(chat.source().find("<tool_call>"), std::string::npos);
  expect_parity(config,
                {ordered_json::object(), {{"enable_thinking", false}}, {{"enable_thinking", true}}},
                "qwen3");
}

class ChatTemplateConfigs : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(LCLM_BINARY_DIR) / "chat_template_test" /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }
  fs::path dir_;
};

TEST_F(ChatTemplateConfigs, NamedTemplatesAndAddedTokens) {
  // The list form (tool_use chosen when tools are given) and special tokens
  // written as AddedToken objects; an empty token is not set.
  const fs::path config = write("tokenizer_config.json", R"({
    "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "unk_token": "",
    "additional_special_tokens": [{"content": "<x>"}, "<y>"],
    "chat_template": [
      {"name": "default", "template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}{{ unk_token is defined }}{{ additional_special_tokens }}"},
      {"name": "tool_use", "template": "tools: {{ tools | tojson }} {{ messages | length }}{% if add_generation_prompt %}>{% endif %}"}
    ]})");
  expect_parity(config, {ordered_json::object(), {{"bos_token", "override"}}}, "named");
  const ChatTemplate chat = ChatTemplate::from_tokenizer_config(config);
  const ordered_json messages = {{{"role", "user"}, {"content", "hi"}}};
  EXPECT_EQ(chat.render(messages, false), "<s>[user] hi</s>False['<x>', '<y>']");
  EXPECT_EQ(chat.render(messages, true, ordered_json::array({{{"name", "f"}}})),
            "tools: [{\"name\": \"f\"}] 1>");
}

TEST_F(ChatTemplateConfigs, ChatmlWhenThereIsNoTemplate) {
  const std::vector<ChatMessage> messages = {{"system", "s"}, {"user", "u"}, {"assistant", "a"}};
  for (const fs::path& config :
       {write("tokenizer_config.json", R"({"eos_token": "<|im_end|>"})"), dir_ / "absent.json"}) {
    const ChatTemplate chat = ChatTemplate::from_tokenizer_config(config);
    EXPECT_TRUE(chat.is_chatml());
    for (const bool prompt : {true, false}) {
      EXPECT_EQ(chat.render(messages_json(messages), prompt), format_chatml(messages, prompt));
    }
  }
}

TEST_F(ChatTemplateConfigs, TemplateFileOverridesTheConfig) {
  const fs::path config =
      write("tokenizer_config.json", R"({"eos_token": "E", "chat_template": "model's"})");
  const fs::path file = write("custom.jinja", "{{ messages[0].content }}{{ eos_token }}\n");
  const ordered_json messages = {{{"role", "user"}, {"content", "x"}}};
  EXPECT_EQ(ChatTemplate::from_file(file, config).render(messages, false), "xE");
  EXPECT_TRUE(ChatTemplate::from_file("chatml", config).is_chatml());
}

// The end of an assistant turn, as each family's template writes it (the
// special tokens from a config like the model's: Mistral ends with eos).
TEST_F(ChatTemplateConfigs, TurnEndIsWhatFollowsAnAssistantAnswer) {
  const fs::path config =
      write("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  const fs::path templates = fs::path(LCLM_SOURCE_DIR) / "tests/runtime/templates";
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"chatml.jinja", "<|im_end|>\n"},
      {"Qwen-Qwen2.5-7B-Instruct.jinja", "<|im_end|>\n"},
      {"meta-llama-Llama-3.1-8B-Instruct.jinja", "<|eot_id|>"},
      {"google-gemma-2-2b-it.jinja", "<end_of_turn>\n"},
      {"microsoft-Phi-3.5-mini-instruct.jinja", "<|end|>\n</s>"},  // and eos at the end
      {"mistralai-Mistral-Nemo-Instruct-2407.jinja", "</s>"},
  };
  for (const auto& [file, end] : expected) {
    EXPECT_EQ(ChatTemplate::from_file(templates / file, config).turn_end(), end) << file;
  }
  EXPECT_EQ(ChatTemplate::chatml().turn_end(), "<|im_end|>\n");
  // A template that writes nothing after the answer, or refuses the chat.
  EXPECT_EQ(ChatTemplate::from_file(
                write("bare.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}"), config)
                .turn_end(),
            "");
  EXPECT_EQ(ChatTemplate::from_file(write("refuses.jinja", "{{ raise_exception('no') }}"), config)
                .turn_end(),
            "");
}

TEST_F(ChatTemplateConfigs, BadConfigsNameTheFileAndField) {
  const auto error = [](const fs::path& config) {
    try {
      ChatTemplate::from_tokenizer_config(config);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const fs::path number = write("a.json", R"({"chat_template": 3})");
  EXPECT_EQ(error(number),
            number.string() + " chat_template must be a string or a list of named templates");
  const fs::path no_default =
      write("b.json", R"({"chat_template": [{"name": "rag", "template": "x"}]})");
  EXPECT_EQ(error(no_default),
            no_default.string() + " chat_template has no template named \"default\"");
  const fs::path syntax = write("c.json", R"({"chat_template": "ok\n{% if %}"})");
  EXPECT_EQ(error(syntax),
            syntax.string() +
                " chat_template, line 2: expected an expression, got end of statement block");
  const fs::path bad_token = write("d.json", R"({"eos_token": 5, "chat_template": "x"})");
  EXPECT_EQ(error(bad_token),
            bad_token.string() +
                " \"eos_token\" must be a string or an object with a \"content\" string");
}

}  // namespace
}  // namespace lclm
