// vue-i18n for both apps: zh-CN is the default, en the other catalogue.
// The choice is remembered on the device. vue-i18n 11 compiles messages
// just in time without `new Function`, so the strict CSP (no eval) holds.
// Every string a screen shows is a key of these catalogues: eslint's
// `vue/no-bare-strings-in-template` fails on any other text in a template.

import { createI18n } from "vue-i18n";

import en from "./en";
import zhCN from "./zh-CN";

export type MessageSchema = typeof zhCN;
export const LOCALES = ["zh-CN", "en"] as const;
export type Locale = (typeof LOCALES)[number];
const KEY = "lectern.locale";

function initialLocale(): Locale {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved && (LOCALES as readonly string[]).includes(saved)) return saved as Locale;
  } catch {
    // Storage can be off in private webviews: use the default.
  }
  return "zh-CN";
}

export const i18n = createI18n<[MessageSchema], Locale, false>({
  legacy: false,
  locale: initialLocale(),
  fallbackLocale: "zh-CN",
  messages: { "zh-CN": zhCN, en },
});

export function setLocale(locale: Locale): void {
  i18n.global.locale.value = locale;
  document.documentElement.lang = locale;
  try {
    localStorage.setItem(KEY, locale);
  } catch {
    // Not remembered: the page still switches.
  }
}

/** What to show for a failed call: the catalogue's text for its code, else the server's. */
export function errorText(error: unknown): string {
  const t = i18n.global.t as (key: string) => string;
  const te = i18n.global.te as (key: string) => boolean;
  if (error && typeof error === "object" && "code" in error) {
    const code = String((error as { code: unknown }).code);
    if (te(`errors.${code}`)) return t(`errors.${code}`);
    if ("message" in error) return String((error as { message: unknown }).message);
  }
  return t("errors.generic");
}
