#include "eval/eval_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

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
      {"full", "#222222"},   {"latent", "#d62728"},    {"streaming", "#1f77b4"}, {"h2o", "#2ca02c"},
      {"snapkv", "#9467bd"}, {"pyramidkv", "#ff7f0e"}, {"indexmem", "#8c564b"}};
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
    auto& t = tasks[key][std::string(ruler_task_name(r.task))];
    t.first += r.score;
    ++t.second;
  }
  for (EvalCell& c : cells) {
    const auto n = static_cast<double>(c.runs);
    for (double* v : {&c.accuracy, &c.ttft_ms, &c.peak_extra_bytes, &c.peak_rss_bytes, &c.kv_bytes,
                      &c.kv_peak_bytes, &c.positions, &c.prompt_tokens}) {
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
                          {"prompt_tokens", c.prompt_tokens}});
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
  md << " | TTFT ms | peak MiB | KV MiB | KV peak MiB | positions | runs |\n|---|---|---|---";
  for (std::size_t i = 0; i < task_names.size(); ++i) md << "|---";
  md << "|---|---|---|---|---|---|\n";
  for (const EvalCell& c : cells) {
    md << "| " << c.method << " | " << ratio_label(c) << " | " << c.length << " | "
       << fixed(100 * c.accuracy, 1);
    for (const std::string& t : task_names) {
      const auto it = c.task_accuracy.find(t);
      md << " | " << (it == c.task_accuracy.end() ? "" : fixed(100 * it->second, 1));
    }
    md << " | " << fixed(c.ttft_ms, 1) << " | " << fixed(c.peak_extra_bytes / kMiB, 1) << " | "
       << fixed(c.kv_bytes / kMiB, 2) << " | " << fixed(c.kv_peak_bytes / kMiB, 2) << " | "
       << fixed(c.positions, 0) << " | " << c.runs << " |\n";
  }
  md << "\naccuracy: RULER's string match (share of the expected answers found in the greedy "
        "output), averaged over runs. TTFT: prompt text to first token (tokenizing, "
        "compressing, prefill, first sample). peak MiB: peak resident memory of the run above "
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
    const std::string column = r.method == "full" ? "full" : r.method + " " + std::to_string(r.ratio) + "x";
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
                             : "answers found";
    md << "\n" << task << ": runs answered in full / runs, " << graded << " in place (mean %)\n\n| "
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

std::vector<FrontierPoint> frontier_points(const std::vector<EvalCell>& cells) {
  std::vector<FrontierPoint> points;
  std::vector<std::size_t> counts;
  for (const EvalCell& c : cells) {
    const std::string label = c.method == "full" ? "full" : c.method + " " + ratio_label(c);
    auto it = std::find_if(points.begin(), points.end(),
                           [&](const FrontierPoint& p) { return p.label == label; });
    if (it == points.end()) {
      FrontierPoint p;
      p.label = label;
      p.method = c.method;
      points.push_back(std::move(p));
      counts.push_back(0);
      it = points.end() - 1;
    }
    const auto i = static_cast<std::size_t>(it - points.begin());
    it->ttft_ms += c.ttft_ms;
    it->accuracy += c.accuracy;
    ++counts[i];
  }
  for (std::size_t i = 0; i < points.size(); ++i) {
    points[i].ttft_ms /= static_cast<double>(counts[i]);
    points[i].accuracy /= static_cast<double>(counts[i]);
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

std::string frontier_svg(const std::vector<FrontierPoint>& points, const std::string& title) {
  constexpr double W = 640, H = 420, left = 60, right = 150, top = 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  double lo = 1e300, hi = 0;
  for (const FrontierPoint& p : points) {
    lo = std::min(lo, std::max(p.ttft_ms, 1e-3));
    hi = std::max(hi, std::max(p.ttft_ms, 1e-3));
  }
  if (points.empty()) lo = hi = 1;
  // A log axis over whole decades around the data.
  const double x0 = std::floor(std::log10(lo)), x1 = std::max(x0 + 1, std::ceil(std::log10(hi)));
  const auto sx = [&](double ms) {
    return left + (std::log10(std::max(ms, 1e-3)) - x0) / (x1 - x0) * pw;
  };
  const auto sy = [&](double acc) { return top + (1.0 - acc) * ph; };
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << xml(title)
    << "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // accuracy grid: 0, 20, ... 100 %
    const double y = sy(i / 5.0);
    s << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + pw << "\" y2=\"" << y
      << "\" stroke=\"#dddddd\"/>\n<text x=\"" << left - 6 << "\" y=\"" << y + 4
      << "\" text-anchor=\"end\">" << i * 20 << "</text>\n";
  }
  for (double d = x0; d <= x1; ++d) {  // TTFT decades
    const double x = sx(std::pow(10.0, d));
    s << "<line x1=\"" << x << "\" y1=\"" << top << "\" x2=\"" << x << "\" y2=\"" << top + ph
      << "\" stroke=\"#dddddd\"/>\n<text x=\"" << x << "\" y=\"" << top + ph + 16
      << "\" text-anchor=\"middle\">" << fixed(std::pow(10.0, d), d < 0 ? 3 : 0) << "</text>\n";
  }
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n"
    << "<text x=\"" << left + pw / 2 << "\" y=\"" << H - 12
    << "\" text-anchor=\"middle\">time to first token (ms, log scale)</text>\n"
    << "<text transform=\"translate(16 " << top + ph / 2
    << ") rotate(-90)\" text-anchor=\"middle\">accuracy (%)</text>\n";
  const std::vector<FrontierPoint> frontier = pareto_frontier(points);
  s << "<polyline fill=\"none\" stroke=\"#888888\" stroke-dasharray=\"4 3\" points=\"";
  for (const FrontierPoint& p : frontier) s << sx(p.ttft_ms) << "," << sy(p.accuracy) << " ";
  s << "\"/>\n";
  for (const FrontierPoint& p : points) {
    s << "<circle cx=\"" << sx(p.ttft_ms) << "\" cy=\"" << sy(p.accuracy) << "\" r=\"4\" fill=\""
      << method_colour(p.method) << "\"><title>" << xml(p.label) << ": " << fixed(p.ttft_ms, 1)
      << " ms, " << fixed(100 * p.accuracy, 1) << " %</title></circle>\n";
  }
  double ly = top + 8;  // legend: one line per point
  for (const FrontierPoint& p : points) {
    s << "<circle cx=\"" << left + pw + 14 << "\" cy=\"" << ly - 4 << "\" r=\"4\" fill=\""
      << method_colour(p.method) << "\"/><text x=\"" << left + pw + 24 << "\" y=\"" << ly << "\">"
      << xml(p.label) << "</text>\n";
    ly += 16;
  }
  s << "</svg>\n";
  return s.str();
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw Error("cannot write " + path);
}

}  // namespace lclm
