// How numbers, money and times read on the page (the same rules as the vwm command's output).

/** Dollars with 4 significant digits, never fewer than cents: $0.0009435, $1,234.57. */
export function usd(value) {
  if (value === null || value === undefined) return "cost unknown";
  const n = Number(value);
  if (n === 0) return "$0.00";
  const digits = Math.max(2, 4 - Math.floor(Math.log10(Math.abs(n))) - 1);
  return "$" + n.toLocaleString("en-US", {
    minimumFractionDigits: 2, maximumFractionDigits: Math.min(digits, 20),
  });
}

export function count(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US");
}

/** "3 s", "5 min", "2 h", "4 d" since `iso`. */
export function age(iso, now = Date.now()) {
  if (!iso) return "–";
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

export function ms(value) {
  if (value === null || value === undefined) return "–";
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(1)} s`;
}

/** Every token of a usage: uncached input, cache read and write, output. */
export function totalTokens(tokens) {
  if (!tokens) return 0;
  return (tokens.input || 0) + (tokens.cache_read || 0) + (tokens.cache_write || 0)
    + (tokens.output || 0);
}
