// Tables and plots of evaluation records: results.json / results.md for
// `lclm eval`, and for `lclm bench` the comparison with the full cache at the
// same length and the accuracy-vs-TTFT frontier as an SVG.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/evaluator.h"

namespace lclm {

// The records of one (method, ratio, length), averaged.
struct EvalCell {
  std::string method;
  std::int64_t ratio = 1;
  std::size_t length = 0;
  std::size_t runs = 0;
  double accuracy = 0;  // mean score, 0..1
  std::map<std::string, double> task_accuracy;
  double ttft_ms = 0;           // mean
  double peak_extra_bytes = 0;  // mean
  double peak_rss_bytes = 0;    // mean
  double kv_bytes = 0;          // mean
  double kv_peak_bytes = 0;     // mean
  double positions = 0;         // mean decoder positions
  double prompt_tokens = 0;     // mean uncompressed prompt tokens
  double rounds = 0;            // agent: mean model calls (0 for other methods)
  // Runs whose sample has a right answer's opening (grade_answer's prefix),
  // and of those the runs whose output starts with it: answers in the
  // question's own terms.
  std::size_t prefix_runs = 0, prefix_correct = 0;
};

// Cells in the order their first records came.
std::vector<EvalCell> summarize_records(const std::vector<EvalRecord>& records);

nlohmann::json eval_results_json(const EvalConfig& config, const std::vector<EvalRecord>& records);
// method x ratio x length -> accuracy (and per task), TTFT, peak memory, KV bytes.
std::string eval_results_markdown(const std::vector<EvalCell>& cells);
// One table per task: rows = lengths, columns = method and ratio, each cell
// "runs with every answer / runs, mean agreement in place" (the graded
// scores of grade_answer).
std::string recall_markdown(const std::vector<EvalRecord>& records);
// Each method against full at the same length: TTFT speed-up, peak memory and
// KV ratios; needs "full" among the cells.
std::string bench_markdown(const std::vector<EvalCell>& cells);

// A point of the frontier plot: one (method, ratio, length) cell.
struct FrontierPoint {
  std::string label;  // "latent 8x" ("full" for the full cache)
  std::string method;
  std::int64_t ratio = 1;
  std::size_t length = 0;
  std::size_t runs = 0;            // samples behind the point
  double ttft_ms = 0;              // mean
  double accuracy = 0;             // mean score, 0..1
  double ci_low = 0, ci_high = 1;  // 95% Wilson interval of the accuracy
};

// The 95% Wilson score interval of a proportion p over n trials (n = 0: [0, 1]).
std::pair<double, double> wilson_interval(double p, std::size_t n);

// One point per cell (method, ratio, length), in the cells' order.
std::vector<FrontierPoint> frontier_points(const std::vector<EvalCell>& cells);
// The points not beaten by another one that is at least as accurate and at
// least as fast, by ascending TTFT (call it on the points of one length).
std::vector<FrontierPoint> pareto_frontier(std::vector<FrontierPoint> points);
// Accuracy (y, with 95% Wilson error bars) against TTFT (x, log scale, 1-2-5
// ticks), one panel per prompt length with that length's Pareto frontier;
// colour by method, marker shape by ratio; the caption (model, machine,
// tasks) under the panels.
std::string frontier_svg(const std::vector<FrontierPoint>& points, const std::string& title,
                         const std::string& caption);
// The plotted data: method, ratio, length, runs, accuracy, ci_low, ci_high,
// ttft_ms, on_frontier (1 when the point is on its length's frontier).
std::string frontier_csv(const std::vector<FrontierPoint>& points);

void write_text_file(const std::string& path, const std::string& text);

}  // namespace lclm
