//! `deploy:follow`: deploy each new tag of a repository pushed to Paz's
//! registry.

use serde::Serialize;
use store::records::DeploySettings;
use store::AppName;

use crate::apps::update;
use crate::args::Args;
use crate::releases::require_images_of;
use crate::{Caller, Context, VerbError};

/// What an app follows now: a sentence as text, its deploy settings as JSON.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Following {
    #[serde(skip)]
    pub app: AppName,
    #[serde(skip)]
    pub repository: String,
    #[serde(skip)]
    pub pattern: Option<String>,
    pub deploy: DeploySettings,
}

impl std::fmt::Display for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} now deploys each new tag of {}",
            self.app, self.repository
        )?;
        if let Some(pattern) = &self.pattern {
            write!(f, " matching {pattern}")?;
        }
        Ok(())
    }
}

pub(crate) async fn follow(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Following, VerbError> {
    let words = args.at_least(2)?;
    if words.len() > 3 {
        return Err(args.usage());
    }
    let repository = words[1].clone();
    let valid = !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-:".contains(c))
        });
    if !valid {
        return Err(VerbError::Invalid(format!(
            "`{repository}` is not a repository name such as web or team/web"
        )));
    }
    // A repository of Paz's registry (`HOST/two`, or `two` when app `two`
    // exists; Docker Hub names such as `acme/web` have no host either) is
    // its app's.
    let owner = match repository.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => context
            .rollouts
            .as_ref()
            .and_then(|rollouts| rollouts.image_owner(&repository)),
        _ => match store::images::repository_app(&repository) {
            Some(app)
                if context
                    .store
                    .get(&context.store.keys().app(&app))
                    .await?
                    .is_some() =>
            {
                Some(app)
            }
            _ => None,
        },
    };
    if let Some(owner) = &owner {
        require_images_of(caller, owner)?;
    }
    let pattern = words.get(2).cloned();
    if let Some(pattern) = &pattern {
        globset::Glob::new(pattern).map_err(|error| {
            VerbError::Invalid(format!(
                "`{pattern}` is not a tag glob such as v* : {error}"
            ))
        })?;
    }
    let (app, ()) = update(context, caller, &words[0], |app| {
        app.deploy.image_repo = Some(repository.clone());
        app.deploy.tag_pattern = pattern.clone();
        Ok(())
    })
    .await?;
    Ok(Following {
        app: app.name,
        repository,
        pattern,
        deploy: app.deploy,
    })
}
