#!/usr/bin/env node
/** The `bdvax` executable (filled in by the CLI issue). */
export {}
