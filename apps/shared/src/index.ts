// @lectern/shared: the typed API client, the session, formatting, i18n.
export * from "./api";
export * from "./session";
export * from "./format";
export * from "./signin";
