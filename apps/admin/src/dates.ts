// Report ranges are days (YYYY-MM-DD) in the organisation's time zone;
// the console names them by the browser's calendar, which is close enough
// for a filter (the answer says which days it covered).
export function daysAgo(n: number): string {
  const d = new Date();
  d.setDate(d.getDate() - n);
  const pad = (x: number) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
