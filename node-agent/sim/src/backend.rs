//! The simulator as an [`Iis`] backend: the primitive operations (appcmd
//! recycle/start, iisreset stop/start, taskkill, the health file) with the
//! timings and failure modes of the sim file.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::StartMode;
use super::Simulator;
use farm_iis::*;

#[async_trait]
impl Iis for Simulator {
    fn backend(&self) -> &'static str {
        "sim"
    }

    async fn status(&self) -> Result<IisStatus, IisError> {
        let st = self.lock();
        Ok(IisStatus {
            services: vec![
                ServiceStatus {
                    name: "W3SVC".into(),
                    state: st.w3svc,
                },
                ServiceStatus {
                    name: "WAS".into(),
                    state: st.was,
                },
            ],
            pools: st
                .pools
                .iter()
                .map(|p| PoolStatus {
                    name: p.cfg.name.clone(),
                    state: if st.was == ServiceState::Running {
                        p.state
                    } else {
                        PoolState::Stopped
                    },
                    stopped_by: (p.state == PoolState::Stopped)
                        .then(|| self.rapid_fail_of(&p.cfg.name))
                        .flatten(),
                    workers: p
                        .workers()
                        .filter(|w| !w.is_killed())
                        .map(|w| WorkerInfo {
                            pid: w.pid,
                            started_unix_ms: w.started_unix_ms,
                        })
                        .collect(),
                })
                .collect(),
            sites: st
                .sites
                .iter()
                .map(|s| SiteStatus {
                    name: s.name.clone(),
                    bindings: vec![format!(
                        "http/{}:{}:{}",
                        self.cfg().address,
                        s.port,
                        s.host.clone().unwrap_or_default()
                    )],
                    state: if st.w3svc == ServiceState::Running {
                        "Started".into()
                    } else {
                        "Stopped".into()
                    },
                    pool: s.app_pool.clone(),
                    physical_path: st
                        .ignored
                        .get(&s.name)
                        .or_else(|| st.roots.get(&s.name))
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                })
                .collect(),
        })
    }

    async fn in_flight(&self) -> Result<Option<u64>, IisError> {
        Ok(Some(*self.inner.in_flight.borrow()))
    }

    fn in_flight_feed(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.in_flight.subscribe())
    }

    fn state_feed(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.changed.subscribe())
    }

    async fn recycle_pool(&self, pool: &str) -> Result<(), IisError> {
        let mut st = self.lock();
        let idx = st
            .pools
            .iter()
            .position(|p| p.cfg.name.eq_ignore_ascii_case(pool))
            .ok_or_else(|| IisError::NoSuchPool(pool.into()))?;
        if st.pools[idx].state != PoolState::Started || st.was != ServiceState::Running {
            return Err(IisError::Command {
                command: format!("appcmd recycle apppool /apppool.name:{pool}"),
                code: 1062,
                message: "The service has not been started.".into(),
            });
        }
        self.fire_never_healthy(&mut st);
        let name = st.pools[idx].cfg.name.clone();
        let cfg = st.pools[idx].cfg.clone();
        self.recycled(&name);
        if st.pools[idx].active.is_none() && st.pools[idx].starting.is_none() {
            drop(st);
            self.event("recycle", &name);
            return Ok(());
        }
        let now = Instant::now();
        let new = self.new_worker(&mut st, now + cfg.startup, cfg.warmup);
        let p = &mut st.pools[idx];
        if cfg.overlapped {
            // WAS starts the new w3wp; HTTP.sys moves new requests to it once
            // it is up, and the old one finishes what it has.
            if let Some(stale) = p.starting.replace(new.clone()) {
                stale.kill();
            }
            let sim = self.clone();
            let (pool_name, new_w) = (name.clone(), new.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(now + cfg.startup).await;
                let mut st = sim.lock();
                let Some(p) = st.pools.iter_mut().find(|p| p.cfg.name == pool_name) else {
                    return;
                };
                if !p.starting.as_ref().is_some_and(|s| Arc::ptr_eq(s, &new_w)) {
                    return;
                }
                p.starting = None;
                let old = p.active.replace(new_w);
                if let Some(old) = old {
                    p.retiring.push(old.clone());
                    drop(st);
                    sim.retire(pool_name, old, cfg.shutdown_time_limit);
                }
                sim.state_changed();
            });
        } else {
            // Non-overlapped: the old worker stops first; requests get 503
            // until the new one is up.
            p.rotating = true;
            let old = p.active.take();
            p.retiring.extend(old.clone());
            let sim = self.clone();
            let (pool_name, new_w) = (name.clone(), new.clone());
            tokio::spawn(async move {
                if let Some(old) = &old {
                    let _ = tokio::time::timeout(cfg.shutdown_time_limit, old.idle()).await;
                    old.kill();
                }
                tokio::time::sleep(cfg.startup).await;
                let mut st = sim.lock();
                if let Some(p) = st.pools.iter_mut().find(|p| p.cfg.name == pool_name) {
                    if let Some(old) = &old {
                        p.retiring.retain(|w| !Arc::ptr_eq(w, old));
                    }
                    new_w.set_warm_at(Instant::now() + cfg.warmup);
                    p.active = Some(new_w);
                    p.rotating = false;
                }
                drop(st);
                sim.state_changed();
            });
        }
        let crash = self.cfg().faults.crash_after_recycle;
        drop(st);
        self.state_changed();
        self.event("recycle", &name);
        if crash {
            self.crash_later(name, new);
        }
        Ok(())
    }

    async fn start_pool(&self, pool: &str) -> Result<(), IisError> {
        let mut st = self.lock();
        let was_running = st.was == ServiceState::Running;
        let idx = st
            .pools
            .iter()
            .position(|p| p.cfg.name.eq_ignore_ascii_case(pool))
            .ok_or_else(|| IisError::NoSuchPool(pool.into()))?;
        if !was_running {
            return Err(IisError::Command {
                command: format!("appcmd start apppool /apppool.name:{pool}"),
                code: 1062,
                message: "The service has not been started.".into(),
            });
        }
        if st.pools[idx].state == PoolState::Started {
            return Ok(());
        }
        st.pools[idx].state = PoolState::Started;
        if st.pools[idx].cfg.start_mode == StartMode::AlwaysRunning {
            let (startup, warmup) = (st.pools[idx].cfg.startup, st.pools[idx].cfg.warmup);
            let w = self.new_worker(&mut st, Instant::now() + startup, warmup);
            st.pools[idx].active = Some(w);
        }
        let name = st.pools[idx].cfg.name.clone();
        drop(st);
        self.state_changed();
        self.event("start_pool", &name);
        Ok(())
    }

    async fn stop_iis(&self, timeout: Duration) -> Result<StopOutcome, IisError> {
        {
            let mut st = self.lock();
            if st.w3svc == ServiceState::Stopped && st.was == ServiceState::Stopped {
                return Ok(StopOutcome::Stopped);
            }
            st.w3svc = ServiceState::StopPending;
            st.was = ServiceState::StopPending;
        }
        self.state_changed();
        // Listeners close at once: new connections are refused.
        self.inner.listening.send_replace(false);
        if let Some(l) = &self.inner.logs {
            l.close_all();
        }
        self.event("iis_stop", "");
        let failed = || {
            StopOutcome::Failed(
                "Attempting stop...\r\nStop attempt failed.\r\nThe service cannot accept control messages at this time. (2147943461, 80070425)\r\n".into(),
            )
        };
        if self.cfg().faults.stop_hangs {
            tokio::time::sleep(timeout).await;
            return Ok(failed());
        }
        let deadline = Instant::now() + timeout;
        let mut feed = self.inner.in_flight.subscribe();
        let drained = tokio::time::timeout_at(deadline, async {
            let _ = feed.wait_for(|n| *n == 0).await;
        })
        .await
        .is_ok();
        if !drained {
            return Ok(failed());
        }
        let stop_time = self.cfg().timings.iis_stop;
        if Instant::now() + stop_time > deadline {
            tokio::time::sleep_until(deadline).await;
            return Ok(failed());
        }
        tokio::time::sleep(stop_time).await;
        let mut st = self.lock();
        self.stop_everything(&mut st);
        Ok(StopOutcome::Stopped)
    }

    async fn force_stop_iis(&self) -> Result<(), IisError> {
        let mut st = self.lock();
        self.stop_everything(&mut st);
        drop(st);
        self.event("iis_killed", "");
        Ok(())
    }

    async fn start_iis(&self) -> Result<(), IisError> {
        {
            let st = self.lock();
            if st.w3svc == ServiceState::Running && st.was == ServiceState::Running {
                return Ok(());
            }
        }
        tokio::time::sleep(self.cfg().timings.iis_start).await;
        let mut st = self.lock();
        if matches!(st.was, ServiceState::StopPending) {
            return Err(IisError::Command {
                command: "iisreset /start".into(),
                code: 1,
                message: "Start attempt failed.\nThe service cannot accept control messages at this time. (2147943461, 80070425)".into(),
            });
        }
        if st.start_fails_left > 0 {
            st.start_fails_left -= 1;
            return Err(IisError::Command {
                command: "iisreset /start".into(),
                code: 1,
                message: "Restart attempt failed.\nThe service cannot accept control messages at this time. (2147943461, 80070425)".into(),
            });
        }
        st.was = ServiceState::Running;
        st.w3svc = ServiceState::Running;
        let now = Instant::now();
        for i in 0..st.pools.len() {
            let p = &st.pools[i];
            if p.state == PoolState::Started && p.cfg.start_mode == StartMode::AlwaysRunning {
                let (startup, warmup) = (p.cfg.startup, p.cfg.warmup);
                let w = self.new_worker(&mut st, now + startup, warmup);
                st.pools[i].active = Some(w);
            }
        }
        self.fire_never_healthy(&mut st);
        drop(st);
        self.state_changed();
        self.inner.listening.send_replace(true);
        self.event("iis_start", "");
        Ok(())
    }

    async fn site_path(&self, site: &str) -> Result<String, IisError> {
        let st = self.lock();
        if !self
            .cfg()
            .sites
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(site))
        {
            return Err(IisError::NoSuchSite(site.into()));
        }
        Ok(st
            .ignored
            .iter()
            .chain(st.roots.iter())
            .find(|(name, _)| name.eq_ignore_ascii_case(site))
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_default())
    }

    async fn set_site_path(&self, site: &str, path: &str) -> Result<(), IisError> {
        let Some(name) = self
            .cfg()
            .sites
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(site))
            .map(|s| s.name.clone())
        else {
            return Err(IisError::NoSuchSite(site.into()));
        };
        if self.cfg().faults.switch_ignored {
            self.lock().ignored.insert(name.clone(), path.into());
        } else {
            let mut st = self.lock();
            st.ignored.remove(&name);
            st.roots.insert(name.clone(), path.into());
        }
        self.state_changed();
        self.event("switch", &format!("{name} {path}"));
        Ok(())
    }

    async fn health_file_present(&self) -> Result<bool, IisError> {
        Ok(self.health_file())
    }

    async fn set_health_file(&self, present: bool) -> Result<(), IisError> {
        let changed = {
            let mut st = self.lock();
            std::mem::replace(&mut st.health_file, present) != present
        };
        if changed {
            self.event(if present { "undrain" } else { "drain" }, "");
        }
        Ok(())
    }

    async fn pool_gauges(&self) -> Result<Vec<crate::PoolGauges>, IisError> {
        Ok(self.gauges())
    }

    async fn diagnose(&self, pool: &str, min_elapsed_ms: u64) -> Result<PoolDiagnostics, IisError> {
        if !self
            .lock()
            .pools
            .iter()
            .any(|p| p.cfg.name.eq_ignore_ascii_case(pool))
        {
            return Err(IisError::NoSuchPool(pool.to_string()));
        }
        Ok(self.diagnostics(pool, min_elapsed_ms))
    }

    async fn running(&self) -> Result<Option<Vec<u64>>, IisError> {
        Ok(Some(self.running_ms()))
    }

    fn traffic_logs(&self) -> Option<TrafficLogs> {
        let dir = self.cfg().logs.clone()?;
        Some(TrafficLogs {
            sites: self
                .cfg()
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| SiteLogs {
                    site: s.name.clone(),
                    id: i as u32 + 1,
                    pool: s.app_pool.clone(),
                    w3c_dir: dir.join(format!("W3SVC{}", i + 1)),
                    // The simulator writes daily files.
                    period: Some("Daily".into()),
                })
                .collect(),
            httperr_dir: Some(dir.join("HTTPERR")),
            check_paths: vec![self.cfg().health_file.clone()],
        })
    }
}
