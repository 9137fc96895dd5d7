// Constrained JSON: the recognizer accepts exactly the documents a schema
// allows (and their prefixes), the token mask found by walking the
// vocabulary in byte order is the one checking every token alone gives, and
// a random model's constrained answers parse and match their schema.
#include "runtime/json_schema.h"

#include <gtest/gtest.h>

#include <random>

#include "core/test_models.h"
#include "runtime/engine.h"
#include "runtime/session.h"

namespace lclm {
namespace {

using nlohmann::json;

// How far text gets: its length when all of it is accepted, else the byte
// refused.
std::size_t accepted(const json& schema, std::string_view text) {
  JsonMatcher m(JsonGrammar::from_schema(schema));
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (!m.feed(text.substr(i, 1))) return i;
  }
  return text.size();
}
bool whole(const json& schema, std::string_view text) {
  JsonMatcher m(JsonGrammar::from_schema(schema));
  return m.feed(text) && m.complete();
}

const json kPerson = json::parse(R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 8},
    "age": {"type": "integer"},
    "height": {"type": "number"},
    "tags": {"type": "array", "items": {"enum": ["a", "b", 3, null]}, "maxItems": 2},
    "pet": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/pet"}]}
  },
  "required": ["name", "age"],
  "additionalProperties": false,
  "$defs": {"pet": {"type": "object", "properties": {"kind": {"const": "cat"}},
                     "required": ["kind"], "additionalProperties": false}}
})");

TEST(JsonMatcher, AcceptsWhatTheSchemaAllows) {
  for (const char* doc : {
           R"({"name":"Ann","age":31})",
           R"({ "age": -0, "name" : "Bo" , "height": 1.5e+3})",
           "{\"name\":\"\\u00e9\\n\\\"\",\"age\":7}",
           R"({"name":"√ü","age":1,"tags":["a",3],"pet":null})",
           R"({"name":"x","age":1,"pet":{"kind":"cat"}})",
           R"({"age":2,"name":"","tags":[]})",
       }) {
    EXPECT_TRUE(whole(kPerson, doc)) << doc;
  }
}

TEST(JsonMatcher, RefusesAtTheFirstByteThatCannotFit) {
  const std::vector<std::pair<std::string, std::size_t>> cases = {
      {R"({"name":"Ann"})", 13},                             // '}' before the required age
      {R"({"name":"Ann","name":"B"})", 15},                  // a key already given
      {R"({"nick":"x"})", 3},                                // no property starts with "ni"
      {R"({"age":1.5})", 8},                                 // an integer has no fraction
      {R"({"age":01})", 8},                                  // no digit after a leading zero
      {R"({"name":"123456789"})", 17},                       // maxLength 8
      {R"({"name":"a","age":1,"tags":[1]})", 28},            // 1 is not in the enum (3 is)
      {R"({"name":"a","age":1,"tags":["a","b","a"]})", 35},  // maxItems 2
      {R"({"name":"a","age":1,"pet":{"kind":"dog"}})", 35},
      {R"({"name":"a","age":1,})", 20},  // no trailing comma
      {R"({"name":"a","age":1} )", 20},  // nothing after the document
      {"{\"name\":\"a\x01\"", 10},       // a control character in a string
      {"{\"name\":\"\xc3(\"", 10},       // a broken UTF-8 sequence
      {"{     \"name\"", 5},             // at most 4 blanks in a row
  };
  for (const auto& [doc, at] : cases) EXPECT_EQ(accepted(kPerson, doc), at) << doc;
}

TEST(JsonMatcher, NumbersEndWhereTheirParentSaysAndTopLevelValuesAreComplete) {
  const json number = {{"type", "number"}};
  JsonMatcher m(JsonGrammar::from_schema(number));
  ASSERT_TRUE(m.feed("-12"));
  EXPECT_TRUE(m.complete());
  EXPECT_TRUE(m.can_continue());  // more digits may follow
  ASSERT_TRUE(m.feed(".5e"));
  EXPECT_FALSE(m.complete());
  ASSERT_TRUE(m.feed("-3"));
  EXPECT_TRUE(m.complete());
  EXPECT_FALSE(m.feed(","));

  JsonMatcher object(JsonGrammar::any_object());
  EXPECT_FALSE(object.feed("[1]"));  // JSON mode: an object
  ASSERT_TRUE(object.feed(R"({"a":[1,{"b":null}],"c":"d"})"));
  EXPECT_TRUE(object.complete());
  EXPECT_FALSE(object.can_continue());
}

TEST(JsonMatcher, RecursiveReferencesAreFollowed) {
  const json list = json::parse(R"({"$ref": "#/$defs/node", "$defs": {"node": {
      "type": "object", "properties": {"v": {"type": "integer"}, "next": {"anyOf": [
      {"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["v", "next"],
      "additionalProperties": false}}})");
  EXPECT_TRUE(whole(list, R"({"v":1,"next":{"v":2,"next":{"v":3,"next":null}}})"));
  EXPECT_FALSE(whole(list, R"({"v":1,"next":{"v":2}})"));
  // A schema that is only a reference to itself matches nothing, and ends.
  EXPECT_EQ(accepted(json::parse(R"({"$ref": "#"})"), "{}"), 0u);
}

TEST(JsonGrammar, UnsupportedKeywordsAreErrorsWithTheirPlace) {
  const auto error = [](const char* schema) {
    return testing::error_of([&] { JsonGrammar::from_schema(json::parse(schema)); });
  };
  EXPECT_NE(error(R"({"type":"object","properties":{"e":{"type":"string","pattern":"@"}}})")
                .find("#/properties/e/pattern: the keyword 'pattern' is not supported"),
            std::string::npos);
  EXPECT_NE(error(R"({"type":"string","format":"email"})").find("'format'"), std::string::npos);
  EXPECT_NE(error(R"({"type":"integer","minimum":3})").find("'minimum'"), std::string::npos);
  EXPECT_NE(error(R"({"type":"object","properties":{},"required":["x"]})")
                .find("'x' is not one of the properties"),
            std::string::npos);
  EXPECT_NE(error(R"({"$ref":"#/$defs/missing"})").find("points at nothing"), std::string::npos);
  EXPECT_NE(error(R"({"$ref":"http://example.com/s.json"})").find("only references inside"),
            std::string::npos);
  EXPECT_NE(error(R"({"type":"date"})").find("unknown type 'date'"), std::string::npos);
  EXPECT_NE(error(R"({"type":"string","maxLength":-1})").find("#/maxLength"), std::string::npos);
}

class JsonConstraintTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    engine_ = Engine::load(testing::tiny_model_with_tokenizer("json_constraint")).release();
  }
  static void TearDownTestSuite() { delete engine_; }
  static Engine* engine_;
};
Engine* JsonConstraintTest::engine_ = nullptr;

TEST_F(JsonConstraintTest, TheByteOrderWalkMasksExactlyTheTokensThatFitAlone) {
  const auto V = static_cast<std::size_t>(engine_->decoder().config().vocab_size);
  for (const char* prefix :
       {"", "{", "{\"na", "{\"name\":\"Jo", "{\"name\":\"a\",\"age\":1",
        "{\"name\":\"a\",\"age\":12,\"tags\":[", "{\"age\":3,\"name\":\"\"}"}) {
    SCOPED_TRACE(prefix);
    JsonConstraint c(JsonGrammar::from_schema(kPerson), engine_->tokenizer(), engine_->stop_ids());
    for (const char ch : std::string(prefix)) {
      ASSERT_TRUE(c.allows(*engine_->tokenizer().token_id(std::string(1, ch))));
      c.accept(*engine_->tokenizer().token_id(std::string(1, ch)));
    }
    std::vector<float> logits(V, 1.0f);
    const std::size_t n = c.mask(logits);
    std::size_t alone = 0;
    for (std::size_t id = 0; id < V; ++id) {
      const bool ok = c.allows(static_cast<std::int32_t>(id));
      alone += ok;
      ASSERT_EQ(ok, logits[id] == 1.0f)
          << "token " << id << " '"
          << engine_->tokenizer().token_bytes(static_cast<std::int32_t>(id)) << "'";
    }
    EXPECT_EQ(n, alone);
    EXPECT_GT(n, 0u);
  }
}

TEST_F(JsonConstraintTest, ARandomModelsAnswersParseAndMatchTheSchema) {
  const json schema = json::parse(R"({"type": "object", "properties": {
      "ok": {"type": "boolean"}, "size": {"enum": ["S", "M", "L"]}, "n": {"type": "integer"}},
      "required": ["ok", "size"], "additionalProperties": false})");
  const auto grammar = JsonGrammar::from_schema(schema);
  const PreparedPrompt prompt = engine_->prepare("Answer in JSON:");
  int finished = 0;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE(seed);
    GenerationOptions o;
    o.n_predict = 48;
    o.sampling.seed = seed;
    o.sampling.temperature = 1.0f;
    o.stop_ids = engine_->stop_ids();
    o.constraint = std::make_shared<JsonConstraint>(grammar, engine_->tokenizer(), o.stop_ids);
    Session session = engine_->new_session();
    const GenerationStats s = session.generate(prompt, o);
    const std::string text = engine_->tokenizer().decode(s.tokens);
    JsonMatcher check(grammar);
    ASSERT_TRUE(check.feed(text)) << text;  // always a valid prefix
    if (s.stop != StopReason::StopToken) continue;
    ++finished;
    const json doc = json::parse(text);
    EXPECT_TRUE(doc["ok"].is_boolean()) << text;
    EXPECT_TRUE(doc["size"] == "S" || doc["size"] == "M" || doc["size"] == "L") << text;
    if (doc.contains("n")) {
      EXPECT_TRUE(doc["n"].is_number_integer()) << text;
    }
    for (const auto& [key, value] : doc.items()) {
      EXPECT_TRUE(key == "ok" || key == "size" || key == "n") << key;
    }
  }
  EXPECT_GT(finished, 0);
}

}  // namespace
}  // namespace lclm
