// Toasts for the outcome of an action, with the catalogue's text for an API error.
import { ElMessage } from "element-plus";

import { errorText } from "@lectern/shared/i18n";

export function done(message: string): void {
  ElMessage({ type: "success", message });
}

export function failed(error: unknown): void {
  // Cancelling a dialog is not a failure.
  if (error === "cancel" || error === "close") return;
  ElMessage({ type: "error", message: errorText(error), duration: 6000 });
}
