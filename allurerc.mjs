// Allure 3 configuration of edgeready's sign-off report (`make report`, see report.mk and docs/REPORT.md).
//
// One config, two renderings: the multi-file report (needs a web server: it fetches its data) and,
// with EDGEREADY_SINGLE_FILE=1, the single-file one that opens from file:// and can be mailed.
// EDGEREADY_REPORTS is the gate run's --reports directory (default: reports).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const reports = process.env.EDGEREADY_REPORTS || "reports";
const singleFile = process.env.EDGEREADY_SINGLE_FILE === "1";
const results = join(reports, "allure-results");

// The categories are defined once, in edgeready/allure_extras.py, which writes them to
// allure-results/categories.json (Allure 2 and the classic plugin read them from there); Allure 3's
// awesome plugin only takes them from its config, in the same (compatible) shape.
const categoriesFile = join(results, "categories.json");
const categories = existsSync(categoriesFile) ? JSON.parse(readFileSync(categoriesFile, "utf-8")) : undefined;

// Allure adds a history point each time it renders, even the same results again; report_cli says
// whether this run is new (report_run.json), so re-rendering a report does not double its history.
const runFile = join(reports, "report_run.json");
const newRun = existsSync(runFile) ? JSON.parse(readFileSync(runFile, "utf-8")).new_run !== false : true;

export default {
  name: "edgeready sign-off",
  // Allure 3 keeps history as one JSON line per generated report; outside the report folder, which
  // `make report` deletes before each generation (Allure does not clear it and would nest the new one).
  historyPath: join(reports, "allure-history.jsonl"),
  // Both renderings read the history; only the first adds to it, and only for a new run.
  appendHistory: !singleFile && newRun,
  ...(categories ? { categories } : {}),
  plugins: {
    awesome: {
      options: {
        singleFile,
        reportLanguage: "en",
        // The tree a release engineer reads: target (role/name) > gate > candidate, the labels that
        // edgeready.plugin sets (epic, feature, story).
        groupBy: ["epic", "feature", "story"],
      },
    },
  },
};
