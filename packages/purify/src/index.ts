/** @bdvax/purify */
export {}
