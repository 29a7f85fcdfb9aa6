// Critical operations (role changes, deletions, exports, organisation
// settings) need a fresh step-up: the API answers 403 `step_up_required`.
// `withStepUp` runs the operation, and on that answer asks for the
// authenticator's code (or sends a one-time code when the account has no
// authenticator), proves it, and runs the operation once more.
import { ElMessageBox } from "element-plus";

import { ApiError, api, ok, session } from "@lectern/shared";
import { i18n } from "@lectern/shared/i18n";

export async function withStepUp<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (e) {
    if (!(e instanceof ApiError) || e.code !== "step_up_required") throw e;
  }
  const t = i18n.global.t as (key: string) => string;
  const totp = session.me?.totp_enabled ?? false;
  if (!totp) await ok(api.POST("/api/v1/auth/step-up/code"));
  const { value } = await ElMessageBox.prompt(
    totp ? t("admin.stepUp.totp") : t("admin.stepUp.code"),
    t("admin.stepUp.title"),
    {
      confirmButtonText: t("common.confirm"),
      cancelButtonText: t("common.cancel"),
      inputPattern: /^\s*\d{6,8}\s*$/,
      inputErrorMessage: t("admin.stepUp.invalid"),
    },
  );
  const code = value.trim();
  await ok(api.POST("/api/v1/auth/step-up", { body: totp ? { totp: code } : { code } }));
  return operation();
}
