// The history checker: a dependency graph over the recorded transactions (wr, ww, rw and
// real-time edges); serializable iff it has no cycle; the shortest cycle is reported.
#include "model/history.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <optional>

namespace model {
namespace {

enum class EdgeKind : uint8_t { kWw, kWr, kRw, kRealTime };
const char* EdgeName(EdgeKind kind) {
  switch (kind) {
    case EdgeKind::kWw: return "ww";
    case EdgeKind::kWr: return "wr";
    case EdgeKind::kRw: return "rw";
    case EdgeKind::kRealTime: return "real-time";
  }
  return "?";
}

struct Edge {
  size_t to;
  EdgeKind kind;
};

struct Version {
  size_t writer;  // node: 0 is the initial state
  uint64_t commit_id;
  std::optional<std::string> value;
};

using Versions = std::map<std::string, std::vector<Version>>;
using WriterOf = std::map<std::pair<std::string, std::string>, size_t>;  // (key, value) -> node
using Graph = std::vector<std::vector<Edge>>;

// Every key's versions, ordered by commit id, and who wrote each value. Node 0 is the initial
// state, node i + 1 is txns[i]. Returns an error when two writes give a key the same value (the
// checker tells versions apart by value).
std::optional<std::string> CollectVersions(const std::vector<RecordedTransaction>& txns,
                                           const std::vector<Write>& initial, Versions* versions, WriterOf* writer_of) {
  for (const auto& w : initial) {
    (*versions)[w.key].push_back(Version{0, 0, w.value});
    if (w.value) (*writer_of)[{w.key, *w.value}] = 0;
  }
  for (size_t i = 0; i < txns.size(); i++) {
    const auto& t = txns[i];
    if (!t.commit_id) continue;
    for (const auto& w : t.writes) {
      (*versions)[w.key].push_back(Version{i + 1, *t.commit_id, w.value});
      if (w.value && !writer_of->emplace(std::make_pair(w.key, *w.value), i + 1).second) {
        return "two writes give " + w.key + " the value " + *w.value + ": values must be unique";
      }
    }
  }
  for (auto& [key, list] : *versions) {
    std::stable_sort(list.begin(), list.end(), [](const Version& a, const Version& b) { return a.commit_id < b.commit_id; });
    // Keys absent initially start with an implicit "absent" version of the initial state.
    if (list.front().writer != 0) list.insert(list.begin(), Version{0, 0, std::nullopt});
  }
  return std::nullopt;
}

void AddEdge(Graph& graph, size_t from, size_t to, EdgeKind kind) {
  if (from != to) graph[from].push_back(Edge{to, kind});
}

// Which version of r.key transaction `node` read (*index, an index into the key's versions; left
// empty for a read that constrains nothing), or an error when no committed state could show it.
std::optional<std::string> VersionRead(const RecordedTransaction& t, size_t node, const Read& r, const Versions& versions,
                                       const WriterOf& writer_of, const std::string& name,
                                       std::optional<size_t>* index) {
  auto list_it = versions.find(r.key);
  if (r.value) {
    auto w = writer_of.find({r.key, *r.value});
    if (w == writer_of.end()) {
      return name + " read " + r.key + "=" + *r.value +
             ", a value no committed transaction wrote (aborted, uncommitted or garbage data)";
    }
    if (w->second == node) return std::nullopt;  // its own write says nothing about others
    const auto& list = list_it->second;
    *index = static_cast<size_t>(std::find_if(list.begin(), list.end(), [&](const Version& v) {
                                   return v.writer == w->second && v.value == r.value;
                                 }) - list.begin());
    return std::nullopt;
  }
  if (list_it == versions.end()) return std::nullopt;  // never written by anyone: no constraint
  const auto& list = list_it->second;
  // The newest absent version at or before the snapshot; without a snapshot id the oldest.
  for (size_t v = 0; v < list.size(); v++) {
    if (list[v].value) continue;
    if (t.snapshot_id && list[v].commit_id > *t.snapshot_id) break;
    *index = v;
    if (!t.snapshot_id) break;
  }
  if (!*index) return name + " read " + r.key + " as absent, but it was present in every state it could have read";
  return std::nullopt;
}

// The ww edges (version order) and, for every read, the wr edge from the version's writer and the
// rw edge to the next version's writer.
std::optional<std::string> AddDataEdges(const std::vector<RecordedTransaction>& txns, const Versions& versions,
                                        const WriterOf& writer_of, const std::function<std::string(size_t)>& name,
                                        Graph& graph) {
  for (const auto& [key, list] : versions) {
    for (size_t i = 0; i + 1 < list.size(); i++) AddEdge(graph, list[i].writer, list[i + 1].writer, EdgeKind::kWw);
  }
  for (size_t i = 0; i < txns.size(); i++) {
    const size_t node = i + 1;
    for (const auto& r : txns[i].reads) {
      std::optional<size_t> index;
      if (auto error = VersionRead(txns[i], node, r, versions, writer_of, name(node), &index)) return error;
      if (!index) continue;
      const auto& list = versions.at(r.key);
      AddEdge(graph, list[*index].writer, node, EdgeKind::kWr);
      if (*index + 1 < list.size()) AddEdge(graph, node, list[*index + 1].writer, EdgeKind::kRw);
    }
  }
  return std::nullopt;
}

// Real time through a timeline of event nodes appended after the transactions:
// txn -> its end event -> ... -> a later start event -> txn.
void AddRealTimeEdges(const std::vector<RecordedTransaction>& txns, Graph& graph) {
  struct Event {
    uint64_t time;
    int order;  // starts before ends at equal times: only a strictly earlier end precedes a start
    size_t txn;
  };
  std::vector<Event> events;
  for (size_t i = 0; i < txns.size(); i++) {
    events.push_back({txns[i].start, 0, i + 1});
    events.push_back({txns[i].end, 1, i + 1});
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    return a.time != b.time ? a.time < b.time : a.order < b.order;
  });
  const size_t first_event = graph.size();
  graph.resize(first_event + events.size());
  for (size_t e = 0; e < events.size(); e++) {
    size_t event_node = first_event + e;
    if (e + 1 < events.size()) graph[event_node].push_back(Edge{event_node + 1, EdgeKind::kRealTime});
    if (events[e].order == 1) graph[events[e].txn].push_back(Edge{event_node, EdgeKind::kRealTime});
    else graph[event_node].push_back(Edge{events[e].txn, EdgeKind::kRealTime});
  }
}

// Tarjan's strongly connected components, iteratively (the timeline makes paths as long as the
// history). Returns each node's component; *count is how many there are.
std::vector<int> Components(const Graph& graph, int* count) {
  const size_t total = graph.size();
  std::vector<int> index(total, -1), low(total, 0), component(total, -1);
  std::vector<bool> on_stack(total, false);
  std::vector<size_t> stack;
  int counter = 0, components = 0;
  std::vector<std::pair<size_t, size_t>> work;  // (node, next edge index)
  for (size_t root = 0; root < total; root++) {
    if (index[root] >= 0) continue;
    work.push_back({root, 0});
    while (!work.empty()) {
      auto& [v, next] = work.back();
      if (next == 0 && index[v] < 0) {
        index[v] = low[v] = counter++;
        stack.push_back(v);
        on_stack[v] = true;
      }
      if (next < graph[v].size()) {
        size_t to = graph[v][next++].to;
        if (index[to] < 0) {
          work.push_back({to, 0});
        } else if (on_stack[to]) {
          low[v] = std::min(low[v], index[to]);
        }
        continue;
      }
      if (low[v] == index[v]) {
        size_t w;
        do {
          w = stack.back();
          stack.pop_back();
          on_stack[w] = false;
          component[w] = components;
        } while (w != v);
        components++;
      }
      size_t finished = v;
      work.pop_back();
      if (!work.empty()) low[work.back().first] = std::min(low[work.back().first], low[finished]);
    }
  }
  *count = components;
  return component;
}

struct Cycle {
  std::vector<size_t> path;  // nodes in order; the last leads back to the first
  std::vector<EdgeKind> kinds;
};

// The shortest cycle (counted in transactions) through a transaction node (< n): a BFS from each
// transaction of a non-trivial component back to itself, at most 500 of them.
Cycle ShortestCycle(const Graph& graph, size_t n) {
  int components = 0;
  std::vector<int> component = Components(graph, &components);
  std::vector<int> component_size(components, 0);
  for (size_t v = 0; v < n; v++) component_size[component[v]]++;
  const size_t total = graph.size();
  std::vector<size_t> parent(total);
  std::vector<EdgeKind> parent_kind(total);
  std::vector<int> seen(total, -1);
  auto transactions = [&](const std::vector<size_t>& path) {
    size_t length = 0;
    for (size_t p : path) length += p < n ? 1 : 0;
    return length;
  };
  Cycle best;
  int searches = 0;
  for (size_t source = 0; source < n && searches < 500; source++) {
    if (component_size[component[source]] < 2) continue;
    searches++;
    std::deque<size_t> queue{source};
    std::fill(seen.begin(), seen.end(), -1);
    seen[source] = static_cast<int>(source);
    bool closed = false;
    while (!queue.empty() && !closed) {
      size_t v = queue.front();
      queue.pop_front();
      for (const Edge& e : graph[v]) {
        if (component[e.to] != component[source]) continue;
        if (e.to == source) {
          Cycle found{{v}, {e.kind}};
          for (size_t u = v; u != source; u = parent[u]) {
            found.path.push_back(parent[u]);
            found.kinds.push_back(parent_kind[u]);
          }
          std::reverse(found.path.begin(), found.path.end());
          std::reverse(found.kinds.begin(), found.kinds.end());
          if (best.path.empty() || transactions(found.path) < transactions(best.path)) best = std::move(found);
          closed = true;
          break;
        }
        if (seen[e.to] >= 0) continue;
        seen[e.to] = 1;
        parent[e.to] = v;
        parent_kind[e.to] = e.kind;
        queue.push_back(e.to);
      }
    }
  }
  return best;
}

}  // namespace

HistoryVerdict CheckHistory(const std::vector<RecordedTransaction>& txns, const std::vector<Write>& initial) {
  HistoryVerdict verdict;
  auto fail = [&](std::string why) {
    verdict.ok = false;
    verdict.explanation = std::move(why);
    return verdict;
  };
  // Nodes: 0 = initial state, 1..n = transactions, then timeline event nodes.
  const size_t n = txns.size() + 1;
  std::function<std::string(size_t)> name = [&](size_t node) {
    return node == 0 ? std::string("initial state") : txns[node - 1].name;
  };
  Versions versions;
  WriterOf writer_of;
  if (auto error = CollectVersions(txns, initial, &versions, &writer_of)) return fail(*error);
  Graph graph(n);
  if (auto error = AddDataEdges(txns, versions, writer_of, name, graph)) return fail(*error);
  AddRealTimeEdges(txns, graph);
  Cycle best = ShortestCycle(graph, n);
  if (best.path.empty()) return verdict;
  // Render, folding timeline nodes into one real-time edge.
  std::string text;
  for (size_t i = 0; i < best.path.size(); i++) {
    if (best.path[i] >= n) continue;
    size_t j = i;
    EdgeKind kind = best.kinds[i];
    while (best.path[(j + 1) % best.path.size()] >= n) {
      j = (j + 1) % best.path.size();
      kind = EdgeKind::kRealTime;
    }
    verdict.cycle.push_back(name(best.path[i]));
    text += name(best.path[i]) + " -" + EdgeName(kind) + "-> ";
  }
  text += verdict.cycle.front();
  return fail("not serializable: " + text);
}

}  // namespace model
