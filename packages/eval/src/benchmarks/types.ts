/**
 * A multiple-choice item in lm-evaluation-harness's form: one log-likelihood request per option.
 * For most tasks every option shares the context and differs in the continuation (" " + choice); WinoGrande
 * ("partial scoring") shares the continuation and differs in the context.
 */
export interface McOption {
  readonly context: string
  readonly continuation: string
  /**
   * lm-eval's `doc_to_choice` entry for this option, whose length (in characters, i.e. code points) divides the
   * log-likelihood for acc_norm. It is the choice without the target delimiter (" "), so it is one shorter than
   * `continuation` for most tasks; for WinoGrande it is the option's context. Defaults to `continuation`.
   */
  readonly choice?: string
}

export interface McItem {
  readonly id: string
  readonly options: readonly McOption[]
  /** index of the gold option */
  readonly label: number
  /** sub-task for grouped aggregation (MMLU subject) */
  readonly group?: string
}

/** Which metrics lm-eval reports for each task (the others can still be computed). */
export const LM_EVAL_METRICS = {
  arc_easy: ["acc", "acc_norm"],
  arc_challenge: ["acc", "acc_norm"],
  boolq: ["acc"],
  hellaswag: ["acc", "acc_norm"],
  winogrande: ["acc"],
  openbookqa: ["acc", "acc_norm"],
  piqa: ["acc", "acc_norm"],
  rte: ["acc"],
  mmlu: ["acc"],
} as const satisfies Record<string, ReadonlyArray<"acc" | "acc_norm">>

export type McBenchmark = keyof typeof LM_EVAL_METRICS

/** lm-eval's default target delimiter, put in front of every choice. */
export const TARGET_DELIMITER = " "

/** Options that share one context and prepend the target delimiter to each choice. */
export const sharedContext = (context: string, choices: readonly string[]): McOption[] =>
  choices.map((choice) => ({ context, continuation: TARGET_DELIMITER + choice, choice }))
