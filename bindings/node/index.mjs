/*
 * @portarium/libegress for ES modules: real named exports over the CommonJS
 * module (index.js), so both kinds of importer share one module instance
 * (one loaded addon, one set of checkers).
 *
 * Node's import of a CommonJS file sees only the names its lexer can find,
 * and never getters; this file names every export.  tools/test-loader.js
 * checks that it names every enumerable export of index.js.
 */
import cjs from './index.js';
import loader from './loader.js';

export const {
  Checker,
  EgressError,
  EgressPolicyError,
  EgressDeniedError,
  EgressUnavailableError,
  install,
  runWithContext,
  load,
  version,
  specialRangesVersion,
} = cjs;

/** The file the addon was loaded from, or null before it is (a live binding). */
export let addonPath = cjs.addonPath;
loader.onLoad((file) => {
  addonPath = file;
});

export default cjs;
