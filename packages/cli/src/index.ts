/** @bdvax/cli */
export {}
