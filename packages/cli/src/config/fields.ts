import { ATTACKS, TASKS } from "@bdvax/attacks"
import { Effect, Schema, type SchemaAST } from "effect"

/**
 * Field schemas shared by command options and experiment files. Each carries the message a user sees, so a
 * range error reads "expected a number between 0 and 1, got 3" whatever the field.
 */
type NumberCheck = SchemaAST.Check<number>
const numberWith = (message: string, ...checks: readonly [NumberCheck, ...NumberCheck[]]) => Schema.Number.annotate({ message }).pipe(Schema.check(...checks))

const POSITIVE_INT = "expected a positive integer"
export const PositiveInt = numberWith(POSITIVE_INT, Schema.isInt({ message: POSITIVE_INT }), Schema.isGreaterThan(0, { message: POSITIVE_INT }))

const NON_NEGATIVE_INT = "expected an integer ≥ 0"
export const NonNegativeInt = numberWith(NON_NEGATIVE_INT, Schema.isInt({ message: NON_NEGATIVE_INT }), Schema.isGreaterThanOrEqualTo(0, { message: NON_NEGATIVE_INT }))

const SEED = "expected an integer seed in [0, 2^53)"
export const Seed = numberWith(SEED, Schema.isInt({ message: SEED }), Schema.isGreaterThanOrEqualTo(0, { message: SEED }))

const POSITIVE = "expected a positive number"
export const PositiveNumber = numberWith(POSITIVE, Schema.isFinite({ message: POSITIVE }), Schema.isGreaterThan(0, { message: POSITIVE }))

const NON_NEGATIVE = "expected a number ≥ 0"
export const NonNegativeNumber = numberWith(NON_NEGATIVE, Schema.isFinite({ message: NON_NEGATIVE }), Schema.isGreaterThanOrEqualTo(0, { message: NON_NEGATIVE }))

const UNIT = "expected a number between 0 and 1"
export const UnitInterval = numberWith(UNIT, Schema.isBetween({ minimum: 0, maximum: 1 }, { message: UNIT }))

const RATIO = "expected a number in (0, 1]"
/** A poisoning ratio: some records must be poisoned. */
export const PoisonRatio = numberWith(RATIO, Schema.isGreaterThan(0, { message: RATIO }), Schema.isLessThanOrEqualTo(1, { message: RATIO }))

const quoted = (xs: readonly string[]) => xs.map((x) => JSON.stringify(x)).join(", ")
const literalsWith = <const L extends readonly [string, ...string[]]>(what: string, values: L) =>
  Schema.Literals(values).annotate({ message: `expected ${what}: one of ${quoted(values)}` })

export const ATTACK_NAMES = Object.keys(ATTACKS) as [keyof typeof ATTACKS, ...(keyof typeof ATTACKS)[]]
export const TASK_NAMES = Object.keys(TASKS) as [keyof typeof TASKS, ...(keyof typeof TASKS)[]]

export const AttackName = literalsWith("an attack", ATTACK_NAMES)
export const TaskName = literalsWith("a task", TASK_NAMES)
export const TrainMode = literalsWith("a training mode", ["full", "lora"])
export const PoisonMode = literalsWith("a poisoning mode", ["add", "replace"])
export const PlantPromptFormatSchema = literalsWith("a prompt format", ["alpaca", "chat"])
export const EvalPromptFormatSchema = literalsWith("a prompt format", ["alpaca", "chat", "backdoorllm"])

export const NonEmptyString = Schema.String.annotate({ message: "expected a non-empty string" }).pipe(
  Schema.check(Schema.isMinLength(1, { message: "expected a non-empty string" })),
)

/** A name usable as a folder: letters, digits, `.`, `_`, `-`. */
export const RunName = Schema.String.annotate({ message: "expected a name of letters, digits, '.', '_' or '-'" }).pipe(
  Schema.check(Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, { message: "expected a name of letters, digits, '.', '_' or '-'" })),
)

/** An optional key that decodes to `value` when absent. */
export const withDefault =
  <A>(value: A) =>
  <S extends Schema.Top & { readonly Encoded: A }>(schema: S) =>
    schema.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value as S["Encoded"])))
