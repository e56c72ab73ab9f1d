/** The CLI's version (packages/cli/package.json). */
export const VERSION = "0.1.0"
