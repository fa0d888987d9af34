//! The login form: one field, `token`, the secret `tokens:create` prints.

use maud::{html, Markup};

/// The form, with why the last try was refused.
pub(crate) fn form(refused: Option<&str>) -> Markup {
    crate::layout::bare(
        "Log in",
        html! {
            @if let Some(why) = refused {
                p.error role="alert" { (why) }
            }
            form.card.stack method="post" action="/login" {
                label for="token" { "Paz token" }
                input #token type="password" name="token" autocomplete="current-password"
                    required placeholder="paz_…" autofocus;
                p.hint {
                    "An admin makes one with "
                    code { "ssh paz@HOST tokens:create NAME" }
                    " (add " code { "--role deployer --apps APP" } " for a deployer)."
                }
                button.primary type="submit" { "Log in" }
            }
        },
    )
}
