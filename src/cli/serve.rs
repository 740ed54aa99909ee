//! `berth serve`.

use anyhow::Context;
use secrecy::SecretString;

use crate::app;
use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<()> {
    // BERTH_ADMIN_PASSWORD, or the file named by BERTH_ADMIN_PASSWORD_FILE.
    let (admin_password, warnings) =
        crate::config::env_secret(&crate::config::ProcessEnv, "BERTH_ADMIN_PASSWORD")?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let admin_password = admin_password.map(SecretString::from);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics_listen)"))?,
        ),
        None => None,
    };
    let (state, boot) = app::build(config, admin_password).await?;
    for w in &boot.policy_warnings {
        tracing::warn!("policy: {w}");
    }
    print!("{}", app::startup_banner(&state.config, &boot));
    drop(boot);
    tracing::info!(
        listen = %state.config.listen,
        realm = %state.config.realm(),
        tls = state.tls.is_some(),
        metrics = %state.config.metrics_listen.map_or_else(|| "on listen".to_owned(), |a| a.to_string()),
        "berth serving"
    );
    app::serve_with(state, listener, metrics_listener, shutdown_signal()).await?;
    tracing::info!("berth stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
