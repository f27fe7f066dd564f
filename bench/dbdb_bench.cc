// dbdb-bench: the same workloads against dbdb, LMDB, LevelDB, RocksDB and SQLite, in one process
// run: 16-byte random keys, 100-byte incompressible values (different per key).
//   fillbatch   N puts, one durable commit per 1,000 puts
//   fillsync    single-put durable commits (--fillsync, default 2,000)
//   fillsync4   as many single-put durable commits again, from 4 threads at once on one handle
//               (what group commit is for: a store that shares a sync among waiting writers
//               scales past fillsync; one that syncs every commit alone does not)
//   readrandom  N gets of existing keys in random order
//   scan        one full ordered iteration
//   reopen      close and open the filled store
//   size        bytes on disk after the fill (closed); dbdb also after compact
//   peak        the largest size on disk during the fill (sampled every 20 batches, not timed)
// Prints its seed first, a table of medians over --runs with the ratio dbdb / best peer (above 1:
// dbdb is better), and writes --report JSON and an --svg chart of the ratios.
#include <faultfs/rng.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "stores.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The bytes of every file under `dir`. The peers delete files while it looks (LevelDB's and
// RocksDB's background compactions): a file gone between listing and sizing counts as nothing.
uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code size_ec;
    if (!it->is_regular_file(size_ec)) continue;
    uint64_t size = it->file_size(size_ec);
    if (!size_ec) total += size;
  }
  return total;
}

std::string RandomBytes(faultfs::Rng& rng, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t r = rng.Next();
    for (size_t j = 0; j < 8 && i + j < n; j++) s[i + j] = static_cast<char>(r >> (8 * j));
  }
  return s;
}

// Higher is better for every metric we report a ratio of: rates in ops/s; size as raw/actual.
const std::vector<std::string> kWorkloads = {"fillbatch", "fillsync", "fillsync4", "readrandom",
                                             "scan",      "reopen",   "size",      "peak"};
constexpr int kCommitThreads = 4;  // fillsync4's writers
const std::map<std::string, std::string> kUnits = {{"fillbatch", "ops/s"},  {"fillsync", "ops/s"},
                                                   {"fillsync4", "ops/s"},  {"readrandom", "ops/s"},
                                                   {"scan", "keys/s"},
                                                   {"reopen", "opens/s"}, {"size", "MB"}, {"peak", "MB"}};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string Human(double v) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(v >= 100 ? 0 : 1);
  if (v >= 1e6) out << v / 1e6 << "M";
  else if (v >= 1e4) out << v / 1e3 << "k";
  else out << v;
  return out.str();
}

void WriteSvg(const std::string& path, const std::vector<std::pair<std::string, double>>& ratios,
              const std::string& title) {
  // Bars on a log scale from 1/100 to 100; the line at 1 is parity with the best peer.
  const int width = 760, row = 34, top = 50, left = 190, plot = 520;
  const int height = top + row * static_cast<int>(ratios.size()) + 40;
  auto x = [&](double r) { return left + plot * (std::log10(std::clamp(r, 0.01, 100.0)) + 2) / 4; };
  std::ofstream svg(path);
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' font-family='sans-serif' font-size='13'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='10' y='24' font-size='15' font-weight='bold'>" << title << "</text>\n";
  for (double tick : {0.01, 0.1, 1.0, 10.0, 100.0}) {
    svg << "<line x1='" << x(tick) << "' y1='" << top - 8 << "' x2='" << x(tick) << "' y2='" << height - 30
        << "' stroke='" << (tick == 1.0 ? "#333" : "#ddd") << "'/>\n<text x='" << x(tick) - 12 << "' y='"
        << height - 12 << "'>" << tick << "x</text>\n";
  }
  for (size_t i = 0; i < ratios.size(); i++) {
    int y = top + row * static_cast<int>(i);
    double r = ratios[i].second;
    double x0 = x(1.0), x1 = x(r);
    svg << "<text x='10' y='" << y + 17 << "'>" << ratios[i].first << "</text>\n<rect x='" << std::min(x0, x1)
        << "' y='" << y + 4 << "' width='" << std::max(1.0, std::abs(x1 - x0)) << "' height='" << row - 10
        << "' fill='" << (r >= 1 ? "#3a7d44" : "#c0504d") << "'/>\n<text x='" << std::max(x0, x1) + 6 << "' y='"
        << y + 17 << "'>" << std::setprecision(2) << r << "x</text>\n";
  }
  svg << "</svg>\n";
}

struct Config {
  uint64_t keys = 1000000, fillsync = 2000, seed = 0;
  int runs = 1;
  std::vector<std::string> stores;
  std::string dir, report_path, svg_path;
  bool temporary = false;  // dir is ours: removed after
};

// The command line, or the exit code to leave with (--help, a bad flag, an unknown store).
std::optional<int> ParseArgs(int argc, char** argv, Config* config) {
  CLI::App app{"dbdb-bench: dbdb side by side with LMDB, LevelDB, RocksDB and SQLite"};
  std::string stores_text = "dbdb,lmdb,leveldb,rocksdb,sqlite";
  auto* seed_option = app.add_option("--seed", config->seed, "seed for keys, values and read order");
  app.add_option("--keys", config->keys, "keys to fill")->check(CLI::Range(1000, 100000000));
  app.add_option("--fillsync", config->fillsync, "single-put durable commits")->check(CLI::Range(1, 1000000));
  app.add_option("--runs", config->runs, "runs; the table shows medians")->check(CLI::Range(1, 100));
  app.add_option("--stores", stores_text, "comma-separated: dbdb,lmdb,leveldb,rocksdb,sqlite");
  app.add_option("--dir", config->dir, "where the stores live (default: a temporary directory, removed after)");
  app.add_option("--report", config->report_path, "JSON report");
  app.add_option("--svg", config->svg_path, "SVG chart of the ratios dbdb / best peer");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (seed_option->count() == 0) config->seed = std::random_device{}();
  std::cout << "seed: " << config->seed << std::endl;
  std::stringstream ss(stores_text);
  for (std::string s; std::getline(ss, s, ',');) {
    if (std::find(bench::StoreNames().begin(), bench::StoreNames().end(), s) == bench::StoreNames().end()) {
      std::cerr << "dbdb-bench: unknown store " << s << "\n";
      return 2;
    }
    config->stores.push_back(s);
  }
  config->temporary = config->dir.empty();
  if (config->temporary) {
    config->dir = (std::filesystem::temp_directory_path() / ("dbdb-bench-" + std::to_string(config->seed))).string();
  }
  return std::nullopt;
}

// What every store is given, from the seed: the fill's keys and values, the order they are read
// in, and the single-put phases' own keys.
struct Data {
  bench::KeyValues fill, extra, concurrent;
  std::vector<size_t> order;
};

Data MakeData(const Config& config) {
  faultfs::Rng rng(config.seed);
  Data d;
  d.fill.resize(config.keys);
  for (auto& [k, v] : d.fill) {
    k = RandomBytes(rng, 16);
    v = RandomBytes(rng, 100);
  }
  d.order.resize(config.keys);
  for (size_t i = 0; i < config.keys; i++) d.order[i] = i;
  for (size_t i = config.keys; i > 1; i--) std::swap(d.order[i - 1], d.order[rng.Uniform(i)]);
  d.extra.resize(config.fillsync);
  d.concurrent.resize(config.fillsync);
  for (auto* set : {&d.extra, &d.concurrent}) {
    for (auto& [k, v] : *set) {
      k = RandomBytes(rng, 16);
      v = RandomBytes(rng, 100);
    }
  }
  return d;
}

struct Results {
  // workloads[store][workload] = one value per run
  std::map<std::string, std::map<std::string, std::vector<double>>> workloads;
  std::map<std::string, std::vector<double>> compacted_mb;  // the stores that compact (dbdb)
  // counters[store][name] = one value per run, after the fill and its reads (Store::Counters)
  std::map<std::string, std::map<std::string, std::vector<double>>> counters;
};

// fillbatch, readrandom and scan on an empty store at `path`; returns the largest size seen during
// the fill (sampled every 20 batches).
double FillReadScan(bench::Store& store, const std::string& name, const std::string& path, const Data& d,
                  std::map<std::string, std::vector<double>>* r) {
  const size_t keys = d.fill.size();
  auto t = Clock::now();
  double peak = 0, sampling = 0;
  for (size_t i = 0; i < keys; i += 1000) {
    bench::KeyValues batch(d.fill.begin() + static_cast<long>(i), d.fill.begin() + static_cast<long>(std::min<size_t>(i + 1000, keys)));
    store.WriteBatch(batch);
    if ((i / 1000) % 20 == 19) {
      auto s = Clock::now();
      peak = std::max(peak, DirectoryBytes(path) / 1e6);
      sampling += Since(s);
    }
  }
  (*r)["fillbatch"].push_back(keys / (Since(t) - sampling));
  t = Clock::now();
  std::string value;
  for (size_t i : d.order) {
    if (!store.Get(d.fill[i].first, &value) || value != d.fill[i].second) bench::Die(name + ": readrandom read a wrong value");
  }
  (*r)["readrandom"].push_back(keys / Since(t));
  t = Clock::now();
  uint64_t scanned = store.Scan();
  (*r)["scan"].push_back(scanned / Since(t));
  if (scanned != keys) bench::Die(name + ": scan saw " + std::to_string(scanned) + " keys");
  return peak;
}

// fillsync (one writer), then fillsync4 (kCommitThreads writers at once), on an open store.
void SinglePuts(bench::Store& store, const Data& d, std::map<std::string, std::vector<double>>* r) {
  auto t = Clock::now();
  for (const auto& kv : d.extra) store.WriteBatch(bench::KeyValues{kv});
  (*r)["fillsync"].push_back(d.extra.size() / Since(t));
  t = Clock::now();
  std::vector<std::thread> writers;
  for (int w = 0; w < kCommitThreads; w++) {
    writers.emplace_back([&, w] {
      for (size_t i = w; i < d.concurrent.size(); i += kCommitThreads) {
        store.WriteBatch(bench::KeyValues{d.concurrent[i]});
      }
    });
  }
  for (auto& writer : writers) writer.join();
  (*r)["fillsync4"].push_back(d.concurrent.size() / Since(t));
}

// One run of every workload on one store, in a fresh directory removed after.
void RunStore(const Config& config, const Data& d, const std::string& name, int run, Results* results) {
  std::string path = config.dir + "/run" + std::to_string(run) + "/" + name;
  std::filesystem::remove_all(path);
  auto store = bench::MakeStore(name);
  store->Open(path);
  auto& r = results->workloads[name];
  const double peak = FillReadScan(*store, name, path, d, &r);
  for (const auto& [counter, value] : store->Counters()) results->counters[name][counter].push_back(value);
  store->Close();
  r["size"].push_back(DirectoryBytes(path) / 1e6);
  r["peak"].push_back(std::max(peak, r["size"].back()));
  auto t = Clock::now();
  store->Open(path);
  r["reopen"].push_back(1 / Since(t));
  SinglePuts(*store, d, &r);
  if (store->Compact()) {
    store->Close();
    results->compacted_mb[name].push_back(DirectoryBytes(path) / 1e6);
    store->Open(path);
  }
  store->Close();
  std::cerr << "\rrun " << run + 1 << "/" << config.runs << ": " << name << " done   " << std::flush;
  std::filesystem::remove_all(path);
}

// The table of medians with dbdb against the best peer, into `report` and `ratios` too.
void PrintTable(const Config& config, Results& results, nlohmann::json* report,
                std::vector<std::pair<std::string, double>>* ratios) {
  auto& workloads = results.workloads;
  std::cout << "\n" << std::left << std::setw(12) << "workload" << std::setw(9) << "unit";
  for (const auto& s : config.stores) std::cout << std::right << std::setw(10) << s;
  std::cout << "   dbdb/best peer\n";
  for (const auto& w : kWorkloads) {
    std::cout << std::left << std::setw(12) << w << std::setw(9) << kUnits.at(w);
    double best_peer = 0;
    std::string best_name;
    for (const auto& s : config.stores) {
      double m = Median(workloads[s][w]);
      (*report)["results"][s][w] = {{"runs", workloads[s][w]}, {"median", m}};
      std::cout << std::right << std::setw(10) << Human(m);
      if (s == "dbdb") continue;
      bool smaller_is_better = w == "size" || w == "peak";
      bool better = smaller_is_better ? (best_name.empty() || m < best_peer) : m > best_peer;
      if (better) {
        best_peer = m;
        best_name = s;
      }
    }
    if (workloads.count("dbdb") && !best_name.empty()) {
      double d = Median(workloads["dbdb"][w]);
      double ratio = (w == "size" || w == "peak") ? best_peer / d : d / best_peer;
      ratios->emplace_back(w, ratio);
      (*report)["ratios"][w] = {{"dbdb_over_best_peer", ratio}, {"best_peer", best_name}};
      std::cout << "   " << std::fixed << std::setprecision(2) << ratio << " (" << best_name << ")";
      std::cout.unsetf(std::ios::fixed);
    }
    std::cout << "\n";
  }
}

// dbdb's size after its compact, against the raw data and the smallest peer.
void PrintCompacted(const Config& config, Results& results, nlohmann::json* report,
                    std::vector<std::pair<std::string, double>>* ratios) {
  if (!results.compacted_mb.count("dbdb")) return;
  // After both single-put phases (when dbdb compacts) the stores hold their keys too.
  const double final_raw_mb = static_cast<double>(config.keys + 2 * config.fillsync) * (16 + 100) / 1e6;
  double m = Median(results.compacted_mb["dbdb"]);
  (*report)["dbdb_size_after_compact_mb"] = m;
  (*report)["dbdb_size_after_compact_over_raw"] = m / final_raw_mb;
  std::cout << "dbdb size after compact: " << Human(m) << " MB = " << std::setprecision(3) << m / final_raw_mb
            << "x the raw data (" << Human(final_raw_mb) << " MB, the fill's keys and the single-put phases')\n";
  if (config.stores.empty() || !results.workloads.count("dbdb")) return;
  double best = 0;
  for (const auto& s : config.stores) {
    if (s == "dbdb") continue;
    double v = Median(results.workloads[s]["size"]);
    if (best == 0 || v < best) best = v;
  }
  ratios->emplace_back("size, compacted", best > 0 ? best / m : 1.0);
}

// The stores' counters into `report`, and how much of dbdb's fill waited for its background
// compaction.
void PrintCounters(const Config& config, Results& results, nlohmann::json* report) {
  for (const auto& [s, named] : results.counters) {
    for (const auto& [counter, values] : named) (*report)["counters"][s][counter] = {{"runs", values}, {"median", Median(values)}};
  }
  if (!results.counters.count("dbdb") || !results.counters["dbdb"].count("writer_stall_s")) return;
  // How much of the fill waited for the background compaction (docs: README, Performance).
  auto& c = results.counters["dbdb"];
  std::vector<double> fill_s;
  for (double rate : results.workloads["dbdb"]["fillbatch"]) fill_s.push_back(static_cast<double>(config.keys) / rate);
  std::cout << "dbdb fillbatch: writers waited " << std::fixed << std::setprecision(2) << Median(c["writer_stall_s"])
            << " s of the fill's " << Median(fill_s) << " s for the background compaction (median of runs; "
            << std::setprecision(0) << Median(c["writer_stalls"]) << " waits, "
            << Median(c["background_compactions"]) << " compactions installed by the end of the reads after it)\n";
  std::cout.unsetf(std::ios::fixed);
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  if (std::optional<int> exit_code = ParseArgs(argc, argv, &config)) return *exit_code;
  const Data data = MakeData(config);
  Results results;
  for (int run = 0; run < config.runs; run++) {
    for (const auto& name : config.stores) RunStore(config, data, name, run, &results);
  }
  std::cerr << "\n";
  const double raw_mb = static_cast<double>(config.keys) * (16 + 100) / 1e6;
  nlohmann::json report = {{"seed", config.seed}, {"keys", config.keys}, {"fillsync_commits", config.fillsync},
                           {"runs", config.runs}, {"raw_data_mb", raw_mb}};
  std::vector<std::pair<std::string, double>> ratios;
  PrintTable(config, results, &report, &ratios);
  PrintCompacted(config, results, &report, &ratios);
  PrintCounters(config, results, &report);
  if (!config.report_path.empty()) {
    std::ofstream(config.report_path) << report.dump(2) << "\n";
    std::cout << "report: " << config.report_path << "\n";
  }
  if (!config.svg_path.empty() && !ratios.empty()) {
    WriteSvg(config.svg_path, ratios, "dbdb / best peer, " + std::to_string(config.keys) + " keys (right of 1x: dbdb better)");
    std::cout << "chart: " << config.svg_path << "\n";
  }
  if (config.temporary) std::filesystem::remove_all(config.dir);
  return 0;
}
