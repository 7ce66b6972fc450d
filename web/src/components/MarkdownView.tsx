/** Model output as Markdown, with raw HTML never rendered: markdown-it with html:false escapes
 * every tag (`<img src=x onerror=…>` shows as text), and its link check refuses javascript:,
 * vbscript: and data: (other than images) URLs. */

import MarkdownIt from "markdown-it";
import { useMemo } from "react";

const md = new MarkdownIt({ html: false, linkify: true, typographer: false, breaks: false });

// Links open in a new tab without handing it this page.
const defaultLinkOpen =
  md.renderer.rules.link_open ?? ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options));
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  tokens[idx].attrSet("target", "_blank");
  tokens[idx].attrSet("rel", "noopener noreferrer nofollow");
  return defaultLinkOpen(tokens, idx, options, env, self);
};

export function renderMarkdown(text: string): string {
  return md.render(text);
}

export default function MarkdownView({ text }: { text: string }) {
  const html = useMemo(() => renderMarkdown(text), [text]);
  // The HTML comes from markdown-it with html:false: every tag in `text` is escaped.
  return <div className="markdown" dangerouslySetInnerHTML={{ __html: html }} />;
}
