// Handing a file the API answered (CSV, XLSX, PDF) to the browser as a
// download: the request goes through the typed client (it carries the
// session cookie and the step-up), the body arrives as a Blob, an object
// URL is clicked and released.
import { toApiError } from "@lectern/shared";

interface BlobAnswer {
  data?: unknown;
  error?: unknown;
  response: Response;
}

/** The body of a call made with `parseAs: "blob"`, or the API's error thrown. */
export async function blobOf(call: Promise<BlobAnswer>): Promise<Blob> {
  const { data, error, response } = await call;
  if (!response.ok) throw toApiError(response, error);
  return data as Blob;
}

export function saveBlob(blob: Blob, name: string): void {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}
