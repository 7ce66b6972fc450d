import { lazy, Suspense } from "react";

const MarkdownView = lazy(() => import("./MarkdownView"));

/** Markdown, with the renderer loaded on first use (it is not part of the initial script). */
export function Markdown({ text }: { text: string }) {
  return (
    <Suspense fallback={<pre className="plain">{text}</pre>}>
      <MarkdownView text={text} />
    </Suspense>
  );
}
