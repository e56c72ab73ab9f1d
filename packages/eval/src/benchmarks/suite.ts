import { sharedDataRoot, sharedPaths } from "../paths.js"
import type { Subset } from "../subset.js"
import { loadArc } from "./arc.js"
import { loadBoolq } from "./boolq.js"
import { loadHellaswag } from "./hellaswag.js"
import { loadMmlu } from "./mmlu.js"
import { loadOpenBookQa } from "./openbookqa.js"
import { loadPiqa } from "./piqa.js"
import { loadRte } from "./rte.js"
import type { McBenchmark, McItem } from "./types.js"
import { loadWinogrande } from "./winogrande.js"

/** Load one multiple-choice benchmark from the shared data folder by its lm-eval task name. */
export async function loadSharedMc(name: McBenchmark, subset?: Subset, root: string = sharedDataRoot()): Promise<McItem[]> {
  const p = sharedPaths(root)
  switch (name) {
    case "arc_easy":
      return loadArc(p.arcEasy, subset)
    case "arc_challenge":
      return loadArc(p.arcChallenge, subset)
    case "boolq":
      return loadBoolq(p.boolq, subset)
    case "hellaswag":
      return loadHellaswag(p.hellaswag, subset)
    case "winogrande":
      return loadWinogrande(p.winogrande, subset)
    case "openbookqa":
      return loadOpenBookQa(p.openbookqa, subset)
    case "piqa":
      return loadPiqa(p.piqa, { ...subset, labelsPath: p.piqaLabels })
    case "rte":
      return loadRte(p.rte, subset)
    case "mmlu":
      return loadMmlu(p.mmluTest, subset)
  }
}
