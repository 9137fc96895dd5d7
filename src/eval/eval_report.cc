#include "eval/eval_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <tuple>

#include "util/error.h"

namespace lclm {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string ratio_label(const EvalCell& c) {
  return c.method == "full" ? "-" : std::to_string(c.ratio) + "x";
}

// Escapes the characters XML gives a meaning to.
std::string xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

const char* method_colour(const std::string& method) {
  static const std::map<std::string, const char*> colours = {
      {"full", "#222222"},     {"latent", "#d62728"}, {"streaming", "#1f77b4"},
      {"h2o", "#2ca02c"},      {"snapkv", "#9467bd"}, {"pyramidkv", "#ff7f0e"},
      {"indexmem", "#8c564b"}, {"agent", "#17becf"}};
  const auto it = colours.find(method);
  return it == colours.end() ? "#7f7f7f" : it->second;
}

}  // namespace

std::vector<EvalCell> summarize_records(const std::vector<EvalRecord>& records) {
  std::vector<EvalCell> cells;
  std::map<std::string, std::map<std::string, std::pair<double, std::size_t>>> tasks;
  const auto key_of = [](const EvalRecord& r) {
    return r.method + "|" + std::to_string(r.ratio) + "|" + std::to_string(r.length);
  };
  std::map<std::string, std::size_t> index;
  for (const EvalRecord& r : records) {
    const std::string key = key_of(r);
    auto [it, added] = index.emplace(key, cells.size());
    if (added) {
      EvalCell cell;
      cell.method = r.method;
      cell.ratio = r.ratio;
      cell.length = r.length;
      cells.push_back(std::move(cell));
    }
    EvalCell& c = cells[it->second];
    ++c.runs;
    c.accuracy += r.score;
    c.ttft_ms += r.ttft_ms;
    c.peak_extra_bytes += static_cast<double>(r.peak_extra_bytes);
    c.peak_rss_bytes += static_cast<double>(r.peak_rss_bytes);
    c.kv_bytes += static_cast<double>(r.kv_bytes);
    c.kv_peak_bytes += static_cast<double>(r.kv_peak_bytes);
    c.positions += static_cast<double>(r.positions);
    c.prompt_tokens += static_cast<double>(r.prompt_tokens);
    c.rounds += static_cast<double>(r.rounds.value_or(0));
    if (r.prefix_correct) {
      ++c.prefix_runs;
      c.prefix_correct += *r.prefix_correct ? 1 : 0;
    }
    auto& t = tasks[key][std::string(ruler_task_name(r.task))];
    t.first += r.score;
    ++t.second;
  }
  for (EvalCell& c : cells) {
    const auto n = static_cast<double>(c.runs);
    for (double* v : {&c.accuracy, &c.ttft_ms, &c.peak_extra_bytes, &c.peak_rss_bytes, &c.kv_bytes,
                      &c.kv_peak_bytes, &c.positions, &c.prompt_tokens, &c.rounds}) {
      *v /= n;
    }
    for (const auto& [task, sum] :
         tasks[c.method + "|" + std::to_string(c.ratio) + "|" + std::to_string(c.length)]) {
      c.task_accuracy[task] = sum.first / static_cast<double>(sum.second);
    }
  }
  return cells;
}

nlohmann::json eval_results_json(const EvalConfig& config, const std::vector<EvalRecord>& records) {
  nlohmann::json j;
  std::vector<std::string> tasks, haystack;
  for (RulerTask t : config.tasks) tasks.emplace_back(ruler_task_name(t));
  for (const auto& p : config.haystack) haystack.push_back(p.string());
  j["config"] = {{"checkpoint", config.checkpoint.string()},
                 {"methods", config.methods},
                 {"ratios", config.ratios},
                 {"lengths", config.lengths},
                 {"passages", config.passages},
                 {"tasks", tasks},
                 {"samples", config.samples},
                 {"seed", config.seed},
                 {"prefill_chunk", config.prefill_chunk},
                 {"haystack", haystack}};
  j["cells"] = nlohmann::json::array();
  for (const EvalCell& c : summarize_records(records)) {
    j["cells"].push_back({{"method", c.method},
                          {"ratio", c.ratio},
                          {"length", c.length},
                          {"runs", c.runs},
                          {"accuracy", c.accuracy},
                          {"task_accuracy", c.task_accuracy},
                          {"ttft_ms", c.ttft_ms},
                          {"peak_extra_bytes", c.peak_extra_bytes},
                          {"peak_rss_bytes", c.peak_rss_bytes},
                          {"kv_bytes", c.kv_bytes},
                          {"kv_peak_bytes", c.kv_peak_bytes},
                          {"positions", c.positions},
                          {"prompt_tokens", c.prompt_tokens},
                          {"rounds", c.rounds},
                          {"prefix_runs", c.prefix_runs},
                          {"prefix_correct", c.prefix_correct}});
  }
  j["records"] = nlohmann::json::array();
  for (const EvalRecord& r : records) j["records"].push_back(eval_record_json(r));
  return j;
}

std::string eval_results_markdown(const std::vector<EvalCell>& cells) {
  std::vector<std::string> task_names;
  for (const EvalCell& c : cells) {
    for (const auto& [t, acc] : c.task_accuracy) {
      if (std::find(task_names.begin(), task_names.end(), t) == task_names.end()) {
        task_names.push_back(t);
      }
    }
  }
  std::ostringstream md;
  md << "| method | ratio | length | accuracy %";
  for (const std::string& t : task_names) md << " | " << t;
  md << " | own terms % | TTFT ms | peak MiB | KV MiB | KV peak MiB | positions | rounds | runs "
        "|\n|---|---|---|---";
  for (std::size_t i = 0; i < task_names.size(); ++i) md << "|---";
  md << "|---|---|---|---|---|---|---|---|\n";
  for (const EvalCell& c : cells) {
    md << "| " << c.method << " | " << ratio_label(c) << " | " << c.length << " | "
       << fixed(100 * c.accuracy, 1);
    for (const std::string& t : task_names) {
      const auto it = c.task_accuracy.find(t);
      md << " | " << (it == c.task_accuracy.end() ? "" : fixed(100 * it->second, 1));
    }
    md << " | "
       << (c.prefix_runs == 0 ? std::string()
                              : fixed(100.0 * static_cast<double>(c.prefix_correct) /
                                          static_cast<double>(c.prefix_runs),
                                      1))
       << " | " << fixed(c.ttft_ms, 1) << " | " << fixed(c.peak_extra_bytes / kMiB, 1) << " | "
       << fixed(c.kv_bytes / kMiB, 2) << " | " << fixed(c.kv_peak_bytes / kMiB, 2) << " | "
       << fixed(c.positions, 0) << " | " << (c.rounds > 0 ? fixed(c.rounds, 2) : std::string())
       << " | " << c.runs << " |\n";
  }
  md << "\naccuracy: RULER's string match (share of the expected answers found in the greedy "
        "output), averaged over runs. own terms: runs whose answer opens as a right one does "
        "(the asked key in the trained wording for needles, \"The SUBJECT is \" for facts). "
        "TTFT: prompt text to first token (tokenizing, compressing, prefill, first sample; "
        "agent: to the final answer's first token, every round before it included). positions: "
        "decoder positions computed (agent: over all rounds, reused prefixes not counted). "
        "rounds: the agent's model calls. peak MiB: peak resident memory of the run above "
        "what was resident when it began. KV MiB: keys and values held once the prompt is in "
        "(after a policy's eviction). KV peak MiB: the most the KV cache allocated during the run "
        "(a "
        "policy prefills the whole prompt before it evicts).\n";
  return md.str();
}

std::string recall_markdown(const std::vector<EvalRecord>& records) {
  // task -> length -> column -> (runs, exact, agreement sum); columns and
  // rows in the order they first come.
  struct Sum {
    std::size_t runs = 0, exact = 0;
    double agreement = 0;
  };
  std::vector<std::string> task_order, columns;
  std::map<std::string, std::vector<std::size_t>> lengths;
  std::map<std::string, std::map<std::size_t, std::map<std::string, Sum>>> sums;
  const auto add_once = [](auto& list, const auto& item) {
    if (std::find(list.begin(), list.end(), item) == list.end()) list.push_back(item);
  };
  for (const EvalRecord& r : records) {
    const std::string task(ruler_task_name(r.task));
    const std::string column =
        r.method == "full" ? "full" : r.method + " " + std::to_string(r.ratio) + "x";
    add_once(task_order, task);
    add_once(columns, column);
    add_once(lengths[task], r.length);
    Sum& sum = sums[task][r.length][column];
    ++sum.runs;
    sum.exact += r.score >= 1.0 ? 1 : 0;
    sum.agreement += r.agreement;
  }
  std::ostringstream md;
  for (const std::string& task : task_order) {
    const RulerTask t = parse_ruler_task(task);
    const char* graded = t == RulerTask::Reconstruction ? "words"
                         : t == RulerTask::Numbers      ? "characters"
                         : t == RulerTask::SingleNeedle || t == RulerTask::MultiKey
                             ? "digits of the number"
                         : t == RulerTask::Facts ? "digits of the number (words: found)"
                                                 : "answers found";
    md << "\n"
       << task << ": runs answered in full / runs, " << graded << " in place (mean %)\n\n| "
       << (is_copy_task(t) ? "passage tokens" : "length") << " |";
    for (const std::string& c : columns) md << " " << c << " |";
    md << "\n|---|";
    for (std::size_t i = 0; i < columns.size(); ++i) md << "---|";
    md << "\n";
    for (std::size_t length : lengths[task]) {
      md << "| " << length << " |";
      for (const std::string& c : columns) {
        const auto& row = sums[task][length];
        const auto it = row.find(c);
        if (it == row.end()) {
          md << " |";
          continue;
        }
        const Sum& sum = it->second;
        md << " " << sum.exact << "/" << sum.runs << ", "
           << fixed(100 * sum.agreement / static_cast<double>(sum.runs), 0) << "% |";
      }
      md << "\n";
    }
  }
  return md.str();
}

std::string bench_markdown(const std::vector<EvalCell>& cells) {
  std::ostringstream md;
  md << "| length | method | ratio | accuracy % | TTFT ms | TTFT speed-up vs full | peak MiB | "
        "peak vs full | KV MiB | KV vs full | KV peak MiB | KV peak vs full |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const EvalCell& c : cells) {
    const auto full = std::find_if(cells.begin(), cells.end(), [&](const EvalCell& f) {
      return f.method == "full" && f.length == c.length;
    });
    if (full == cells.end()) throw Error("bench needs the full method to compare against");
    const auto ratio = [](double a, double b) { return b > 0 ? fixed(a / b, 2) + "x" : "-"; };
    md << "| " << c.length << " | " << c.method << " | " << ratio_label(c) << " | "
       << fixed(100 * c.accuracy, 1) << " | " << fixed(c.ttft_ms, 1) << " | "
       << ratio(full->ttft_ms, c.ttft_ms) << " | " << fixed(c.peak_extra_bytes / kMiB, 1) << " | "
       << ratio(c.peak_extra_bytes, full->peak_extra_bytes) << " | " << fixed(c.kv_bytes / kMiB, 2)
       << " | " << ratio(c.kv_bytes, full->kv_bytes) << " | " << fixed(c.kv_peak_bytes / kMiB, 2)
       << " | " << ratio(c.kv_peak_bytes, full->kv_peak_bytes) << " |\n";
  }
  return md.str();
}

std::pair<double, double> wilson_interval(double p, std::size_t n) {
  if (n == 0) return {0.0, 1.0};
  constexpr double z = 1.959963984540054;  // the 97.5th percentile of the normal
  const double nn = static_cast<double>(n), z2 = z * z;
  const double centre = (p + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z / (1 + z2 / nn) * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

std::vector<FrontierPoint> frontier_points(const std::vector<EvalCell>& cells) {
  std::vector<FrontierPoint> points;
  for (const EvalCell& c : cells) {
    FrontierPoint p;
    p.label = c.method == "full" ? "full" : c.method + " " + ratio_label(c);
    p.method = c.method;
    p.ratio = c.method == "full" ? 1 : c.ratio;
    p.length = c.length;
    p.runs = c.runs;
    p.ttft_ms = c.ttft_ms;
    p.accuracy = c.accuracy;
    std::tie(p.ci_low, p.ci_high) = wilson_interval(c.accuracy, c.runs);
    points.push_back(std::move(p));
  }
  return points;
}

std::vector<FrontierPoint> pareto_frontier(std::vector<FrontierPoint> points) {
  std::sort(points.begin(), points.end(), [](const FrontierPoint& a, const FrontierPoint& b) {
    return a.ttft_ms < b.ttft_ms || (a.ttft_ms == b.ttft_ms && a.accuracy > b.accuracy);
  });
  std::vector<FrontierPoint> frontier;
  for (const FrontierPoint& p : points) {
    if (frontier.empty() || p.accuracy > frontier.back().accuracy) frontier.push_back(p);
  }
  return frontier;
}

namespace {

std::vector<std::size_t> lengths_of(const std::vector<FrontierPoint>& points) {
  std::vector<std::size_t> lengths;
  for (const FrontierPoint& p : points) lengths.push_back(p.length);
  std::sort(lengths.begin(), lengths.end());
  lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  return lengths;
}

std::vector<FrontierPoint> at_length(const std::vector<FrontierPoint>& points, std::size_t length) {
  std::vector<FrontierPoint> out;
  for (const FrontierPoint& p : points) {
    if (p.length == length) out.push_back(p);
  }
  return out;
}

bool on_frontier(const FrontierPoint& p, const std::vector<FrontierPoint>& frontier) {
  return std::any_of(frontier.begin(), frontier.end(), [&](const FrontierPoint& f) {
    return f.method == p.method && f.ratio == p.ratio && f.length == p.length;
  });
}

// A marker per ratio, centred at (x, y): full a square, 2x a downward
// triangle, 4x a circle, 8x an upward triangle, 16x a diamond, others a cross.
std::string marker(std::int64_t ratio, double x, double y, const std::string& fill) {
  std::ostringstream m;
  const double r = 4.5;
  const auto polygon = [&](std::initializer_list<std::pair<double, double>> corners) {
    m << "<polygon points=\"";
    for (const auto& [dx, dy] : corners) m << fixed(x + dx, 1) << "," << fixed(y + dy, 1) << " ";
    m << "\" fill=\"" << fill << "\" stroke=\"black\" stroke-width=\"0.5\"";
  };
  switch (ratio) {
    case 1:
      polygon({{-r, -r}, {r, -r}, {r, r}, {-r, r}});
      break;
    case 2:
      polygon({{-r, -r}, {r, -r}, {0, r}});
      break;
    case 4:
      m << "<circle cx=\"" << fixed(x, 1) << "\" cy=\"" << fixed(y, 1) << "\" r=\"" << r
        << "\" fill=\"" << fill << "\" stroke=\"black\" stroke-width=\"0.5\"";
      break;
    case 8:
      polygon({{0, -r}, {r, r}, {-r, r}});
      break;
    case 16:
      polygon({{0, -r - 1}, {r + 1, 0}, {0, r + 1}, {-r - 1, 0}});
      break;
    default:
      m << "<path d=\"M" << fixed(x - r, 1) << " " << fixed(y - r, 1) << " L" << fixed(x + r, 1)
        << " " << fixed(y + r, 1) << " M" << fixed(x - r, 1) << " " << fixed(y + r, 1) << " L"
        << fixed(x + r, 1) << " " << fixed(y - r, 1) << "\" stroke=\"" << fill
        << "\" stroke-width=\"2\"";
  }
  return m.str();
}

// Ticks of a log axis from lo to hi: 1, 2 and 5 times each power of ten.
std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> ticks;
  for (double decade = std::pow(10.0, std::floor(std::log10(lo))); decade <= hi * 10;
       decade *= 10) {
    for (const double m : {1.0, 2.0, 5.0}) {
      const double t = decade * m;
      if (t >= lo * 0.999 && t <= hi * 1.001) ticks.push_back(t);
    }
  }
  return ticks;
}

std::string tick_label(double v) {
  if (v >= 1000) return fixed(v / 1000, v >= 10000 ? 0 : (std::fmod(v, 1000) == 0 ? 0 : 1)) + "k";
  return fixed(v, v >= 1 ? 0 : (v >= 0.1 ? 1 : 3));
}

}  // namespace

std::string frontier_svg(const std::vector<FrontierPoint>& points, const std::string& title,
                         const std::string& caption) {
  const std::vector<std::size_t> lengths = lengths_of(points);
  const std::size_t panels = std::max<std::size_t>(1, lengths.size());
  constexpr double pw = 300, ph = 260, gap = 70, left = 60, top = 50, legend_w = 190;
  const double W = left + panels * pw + (panels - 1) * gap + 30 + legend_w;
  const double H = top + ph + 110;

  // One x range for every panel, so they compare at a glance: padded to
  // whole 1-2-5 steps around the data.
  double lo = 1e300, hi = 0;
  for (const FrontierPoint& p : points) {
    lo = std::min(lo, std::max(p.ttft_ms, 1e-3));
    hi = std::max(hi, std::max(p.ttft_ms, 1e-3));
  }
  if (points.empty()) lo = hi = 1;
  const std::vector<double> around = log_ticks(lo / 10, hi * 10);
  double x_lo = lo, x_hi = hi;
  for (const double t : around) {
    if (t <= lo) x_lo = t;
  }
  for (auto it = around.rbegin(); it != around.rend(); ++it) {
    if (*it >= hi) x_hi = *it;
  }
  if (x_hi <= x_lo) x_hi = x_lo * 2;
  const double lx0 = std::log10(x_lo), lx1 = std::log10(x_hi);

  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << fixed(W, 0) << "\" height=\""
    << fixed(H, 0) << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << fixed(W / 2, 0) << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
    << xml(title) << "</text>\n";
  for (std::size_t k = 0; k < panels; ++k) {
    const double x0 = left + static_cast<double>(k) * (pw + gap);
    const auto sx = [&](double ms) {
      return x0 + (std::log10(std::max(ms, 1e-3)) - lx0) / (lx1 - lx0) * pw;
    };
    const auto sy = [&](double acc) { return top + (1.0 - acc) * ph; };
    const std::vector<FrontierPoint> here =
        lengths.empty() ? std::vector<FrontierPoint>{} : at_length(points, lengths[k]);
    if (!lengths.empty()) {
      s << "<text x=\"" << fixed(x0 + pw / 2, 0) << "\" y=\"" << top - 8
        << "\" text-anchor=\"middle\" font-size=\"13\">" << lengths[k] << " tokens</text>\n";
    }
    for (int i = 0; i <= 10; ++i) {  // accuracy grid every 10 %, labels every 20 %
      const double y = sy(i / 10.0);
      s << "<line x1=\"" << x0 << "\" y1=\"" << fixed(y, 1) << "\" x2=\"" << x0 + pw << "\" y2=\""
        << fixed(y, 1) << "\" stroke=\"" << (i % 2 ? "#f0f0f0" : "#dddddd") << "\"/>\n";
      if (i % 2 == 0) {
        s << "<text x=\"" << x0 - 6 << "\" y=\"" << fixed(y + 4, 1) << "\" text-anchor=\"end\">"
          << i * 10 << "</text>\n";
      }
    }
    for (const double t : log_ticks(x_lo, x_hi)) {
      const double x = sx(t);
      s << "<line x1=\"" << fixed(x, 1) << "\" y1=\"" << top << "\" x2=\"" << fixed(x, 1)
        << "\" y2=\"" << top + ph << "\" stroke=\"#eeeeee\"/>\n<text x=\"" << fixed(x, 1)
        << "\" y=\"" << top + ph + 16 << "\" text-anchor=\"middle\">" << tick_label(t)
        << "</text>\n";
    }
    s << "<rect x=\"" << x0 << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"black\"/>\n"
      << "<text x=\"" << fixed(x0 + pw / 2, 0) << "\" y=\"" << top + ph + 36
      << "\" text-anchor=\"middle\">time to first token (ms, log scale)</text>\n";
    if (k == 0) {
      s << "<text transform=\"translate(18 " << top + ph / 2
        << ") rotate(-90)\" text-anchor=\"middle\">accuracy (%)</text>\n";
    }
    const std::vector<FrontierPoint> frontier = pareto_frontier(here);
    s << "<polyline fill=\"none\" stroke=\"#666666\" stroke-dasharray=\"5 3\" points=\"";
    for (const FrontierPoint& p : frontier) {
      s << fixed(sx(p.ttft_ms), 1) << "," << fixed(sy(p.accuracy), 1) << " ";
    }
    s << "\"/>\n";
    for (const FrontierPoint& p : here) {
      const double x = sx(p.ttft_ms);
      const std::string colour = method_colour(p.method);
      s << "<g><title>" << xml(p.label) << " at " << p.length
        << " tokens: " << fixed(100 * p.accuracy, 1) << " % (95% CI " << fixed(100 * p.ci_low, 1)
        << "-" << fixed(100 * p.ci_high, 1) << ", n = " << p.runs << "), TTFT "
        << fixed(p.ttft_ms, 1) << " ms</title>\n"
        << "<line class=\"error-bar\" x1=\"" << fixed(x, 1) << "\" y1=\"" << fixed(sy(p.ci_low), 1)
        << "\" x2=\"" << fixed(x, 1) << "\" y2=\"" << fixed(sy(p.ci_high), 1) << "\" stroke=\""
        << colour << "\"/>\n";
      for (const double c : {p.ci_low, p.ci_high}) {
        s << "<line x1=\"" << fixed(x - 3, 1) << "\" y1=\"" << fixed(sy(c), 1) << "\" x2=\""
          << fixed(x + 3, 1) << "\" y2=\"" << fixed(sy(c), 1) << "\" stroke=\"" << colour
          << "\"/>\n";
      }
      s << marker(p.ratio, x, sy(p.accuracy), colour) << " class=\"point\"/>\n</g>\n";
    }
  }

  // The legend: methods by colour, ratios by marker, the frontier, the bars.
  const double lx = left + panels * pw + (panels - 1) * gap + 30;
  double ly = top + 4;
  const auto heading = [&](const char* text) {
    s << "<text x=\"" << lx << "\" y=\"" << fixed(ly, 0) << "\" font-weight=\"bold\">" << text
      << "</text>\n";
    ly += 16;
  };
  std::vector<std::string> methods;
  std::vector<std::int64_t> ratios;
  for (const FrontierPoint& p : points) {
    if (std::find(methods.begin(), methods.end(), p.method) == methods.end()) {
      methods.push_back(p.method);
    }
    if (std::find(ratios.begin(), ratios.end(), p.ratio) == ratios.end()) ratios.push_back(p.ratio);
  }
  std::sort(ratios.begin(), ratios.end());
  heading("method");
  for (const std::string& m : methods) {
    s << "<rect x=\"" << lx << "\" y=\"" << fixed(ly - 9, 0)
      << "\" width=\"10\" height=\"10\" fill=\"" << method_colour(m) << "\"/><text x=\"" << lx + 16
      << "\" y=\"" << fixed(ly, 0) << "\">" << xml(m) << "</text>\n";
    ly += 16;
  }
  ly += 6;
  heading("ratio");
  for (const std::int64_t r : ratios) {
    s << marker(r, lx + 5, ly - 4, "#999999") << "/><text x=\"" << lx + 16 << "\" y=\""
      << fixed(ly, 0) << "\">" << (r == 1 ? std::string("uncompressed") : std::to_string(r) + "x")
      << "</text>\n";
    ly += 16;
  }
  ly += 6;
  s << "<line x1=\"" << lx << "\" y1=\"" << fixed(ly - 4, 0) << "\" x2=\"" << lx + 12 << "\" y2=\""
    << fixed(ly - 4, 0) << "\" stroke=\"#666666\" stroke-dasharray=\"5 3\"/><text x=\"" << lx + 16
    << "\" y=\"" << fixed(ly, 0) << "\">Pareto frontier</text>\n";
  ly += 16;
  s << "<line x1=\"" << lx + 6 << "\" y1=\"" << fixed(ly - 10, 0) << "\" x2=\"" << lx + 6
    << "\" y2=\"" << fixed(ly + 2, 0) << "\" stroke=\"#666666\"/><text x=\"" << lx + 16 << "\" y=\""
    << fixed(ly, 0) << "\">95% Wilson interval</text>\n";

  // The caption, wrapped at about 150 characters a line.
  double cy = top + ph + 62;
  std::string line;
  std::istringstream words(caption);
  const auto flush = [&] {
    if (line.empty()) return;
    s << "<text class=\"caption\" x=\"" << left << "\" y=\"" << fixed(cy, 0)
      << "\" font-size=\"11\" fill=\"#333333\">" << xml(line) << "</text>\n";
    cy += 14;
    line.clear();
  };
  for (std::string w; words >> w;) {
    if (line.size() + w.size() + 1 > 150) flush();
    line += (line.empty() ? "" : " ") + w;
  }
  flush();
  s << "</svg>\n";
  return s.str();
}

std::string frontier_csv(const std::vector<FrontierPoint>& points) {
  std::ostringstream csv;
  csv << "method,ratio,length,runs,accuracy,ci_low,ci_high,ttft_ms,on_frontier\n";
  for (const std::size_t length : lengths_of(points)) {
    const std::vector<FrontierPoint> here = at_length(points, length);
    const std::vector<FrontierPoint> frontier = pareto_frontier(here);
    for (const FrontierPoint& p : here) {
      csv << p.method << "," << p.ratio << "," << p.length << "," << p.runs << ","
          << fixed(p.accuracy, 4) << "," << fixed(p.ci_low, 4) << "," << fixed(p.ci_high, 4) << ","
          << fixed(p.ttft_ms, 2) << "," << (on_frontier(p, frontier) ? 1 : 0) << "\n";
    }
  }
  return csv.str();
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw Error("cannot write " + path);
}

}  // namespace lclm
