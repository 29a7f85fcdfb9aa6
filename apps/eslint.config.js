// Lint of both apps and the shared package. Its point is one rule: no
// text a person reads is written into a template: every string comes from
// the i18n catalogues (vue/no-bare-strings-in-template, attributes people
// read included). Symbols that are not words (arrows, ×, ·) are allowed.
import pluginVue from "eslint-plugin-vue";
import tseslint from "typescript-eslint";
import vueParser from "vue-eslint-parser";

export default [
  { ignores: ["**/dist/**", "**/node_modules/**", "shared/src/generated/**", "test-results/**", "playwright-report/**", "screenshots/**"] },
  ...pluginVue.configs["flat/essential"],
  {
    files: ["**/*.vue"],
    languageOptions: { parser: vueParser, parserOptions: { parser: tseslint.parser, sourceType: "module" } },
    rules: {
      "vue/multi-word-component-names": "off",
      "vue/no-bare-strings-in-template": [
        "error",
        {
          allowlist: ["(", ")", ",", ".", "&", "+", "-", "=", "*", "/", "#", "%", "!", "?", ":", "[", "]", "{", "}", "<", ">", "•", "—", "·", "×", "↑", "↓", "|", "&nbsp;"],
          attributes: {
            "/.+/": ["title", "aria-label", "aria-placeholder", "aria-roledescription", "aria-valuetext", "placeholder", "label", "text", "description", "sub-title", "empty-text", "confirm-button-text", "cancel-button-text", "action-text", "left-text"],
            input: ["value"],
            img: ["alt"],
          },
          directives: ["v-text"],
        },
      ],
    },
  },
  {
    files: ["**/*.ts"],
    languageOptions: { parser: tseslint.parser, sourceType: "module" },
  },
];
