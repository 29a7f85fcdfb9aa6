// Numbers and times shown to people, in the page's locale.

export function formatDuration(seconds: number | null | undefined): string {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

export function formatDateTime(iso: string | null | undefined, locale: string): string {
  if (!iso) return "";
  return new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
}

export function formatPercent(share: number, locale: string): string {
  return new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 0 }).format(share);
}

/**
 * Splits `text` into parts that match a word or character of `query` and
 * parts that do not, for highlighting search results without HTML. Chinese
 * has no spaces: each run of CJK characters of the query also matches as
 * its two-character pieces, so 心电图 highlights 心电 in 心电监护.
 */
export function highlight(text: string, query: string): Array<{ text: string; match: boolean }> {
  const terms = new Set<string>();
  for (const word of query.toLowerCase().split(/[\s,，。;；]+/).filter(Boolean)) {
    terms.add(word);
    if (/^[\u3400-\u9fff]+$/.test(word) && word.length > 2) {
      for (let i = 0; i + 2 <= word.length; i++) terms.add(word.slice(i, i + 2));
    }
  }
  if (terms.size === 0) return [{ text, match: false }];
  const escaped = [...terms].sort((a, b) => b.length - a.length).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const split = new RegExp(`(${escaped.join("|")})`, "i");
  const whole = new RegExp(`^(?:${escaped.join("|")})$`, "i");
  return text
    .split(split)
    .filter((part) => part !== "")
    .map((part) => ({ text: part, match: whole.test(part) }));
}
