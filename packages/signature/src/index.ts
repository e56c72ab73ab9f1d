/** @bdvax/signature */
export {}
