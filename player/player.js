// The meshtv player page: finds the channel from the gateway's /api/stats, plays its
// HLS stream (hls.js when the browser has Media Source Extensions, native HLS
// otherwise), and shows the swarm's counters once a second.
//
// Everything comes from the local gateway; the page loads nothing from elsewhere.
'use strict';

(() => {
  const STATS_URL = '/api/stats';
  const STATS_EVERY_MS = 1000;

  const video = document.getElementById('video');
  const $ = (id) => document.getElementById(id);

  let started = false;

  function setStatus(text, kind) {
    const el = $('status');
    el.textContent = text;
    el.className = 'status' + (kind ? ' ' + kind : '');
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function num(value) {
    return typeof value === 'number' && Number.isFinite(value) ? value : null;
  }

  function formatBytes(n) {
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i += 1;
    }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
  }

  function showStats(s) {
    const peers = num(s.bytes_from_peers) ?? 0;
    const source = num(s.bytes_from_source) ?? 0;
    const total = peers + source;
    if (total > 0) {
      const share = (100 * peers) / total;
      $('share').textContent = share.toFixed(1) + ' %';
      $('share-bar').style.width = share.toFixed(1) + '%';
    } else {
      $('share').textContent = '—';
      $('share-bar').style.width = '0';
    }
    $('bytes').textContent = formatBytes(peers) + ' from peers · ' + formatBytes(source) + ' from source';

    const partners = Array.isArray(s.partners) ? s.partners.length : num(s.partners);
    $('partners').textContent = partners === null ? '—' : String(partners);
    const buffer = num(s.buffer_s);
    $('buffer').textContent = buffer === null ? '—' : buffer.toFixed(1) + ' s';
    const stalls = num(s.stalls);
    $('stalls').textContent = stalls === null ? '—' : String(stalls);
    const startup = num(s.startup_s);
    $('startup').textContent = startup === null ? '—' : startup.toFixed(2) + ' s';
  }

  async function pollStats() {
    for (;;) {
      try {
        const response = await fetch(STATS_URL, { cache: 'no-store' });
        if (!response.ok) throw new Error('HTTP ' + response.status);
        const s = await response.json();
        showStats(s);
        if (!started && typeof s.channel === 'string' && s.channel !== '') {
          started = true;
          $('channel').textContent = s.channel;
          document.title = s.channel + ' · meshtv';
          play('/live/' + encodeURIComponent(s.channel) + '/index.m3u8');
        }
      } catch (err) {
        if (!started) setStatus('gateway unreachable', 'error');
      }
      await sleep(STATS_EVERY_MS);
    }
  }

  // The gateway answers 503 (with Retry-After) until the peer has enough to start;
  // players give up on a failing playlist, so the page waits for it first.
  async function waitForPlaylist(url) {
    for (;;) {
      let delayMs = 2000;
      try {
        const response = await fetch(url, { cache: 'no-store' });
        if (response.ok) return;
        if (response.status === 503) {
          setStatus('buffering', 'waiting');
          const retryAfter = Number(response.headers.get('Retry-After'));
          delayMs = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : 1000;
        } else {
          setStatus('stream unavailable (' + response.status + ')', 'error');
        }
      } catch (err) {
        setStatus('gateway unreachable', 'error');
      }
      await sleep(delayMs);
    }
  }

  function autoplay() {
    // Muted autoplay is allowed everywhere; a refusal just leaves the play button.
    const p = video.play();
    if (p && typeof p.catch === 'function') p.catch(() => {});
  }

  async function play(url) {
    await waitForPlaylist(url);
    setStatus('loading', 'waiting');
    // data-engine tells tests (and curious viewers) which path plays the stream.
    if (window.Hls && window.Hls.isSupported()) {
      video.dataset.engine = 'hls.js';
      playWithHlsJs(url);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.dataset.engine = 'native';
      playNatively(url);
    } else {
      setStatus('this browser cannot play HLS', 'error');
    }
  }

  function playWithHlsJs(url) {
    const Hls = window.Hls;
    // A player that fell behind its live target catches up at up to 1.25x, as the
    // peer's playback model does (peer/src/playback.rs: `CatchUp`); hls.js measures
    // its target from the newest segment the gateway lists.
    const hls = new Hls({ lowLatencyMode: false, liveSyncDurationCount: 3, maxLiveSyncPlaybackRate: 1.25 });
    let mediaRecoveries = 0;
    hls.on(Hls.Events.MANIFEST_PARSED, autoplay);
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < 3) {
        mediaRecoveries += 1;
        hls.recoverMediaError();
        return;
      }
      // Anything else (the gateway restarting, the peer falling behind): start over.
      setStatus('reconnecting', 'waiting');
      hls.destroy();
      sleep(1000).then(() => play(url));
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  }

  function playNatively(url) {
    video.addEventListener(
      'error',
      () => {
        setStatus('reconnecting', 'waiting');
        video.removeAttribute('src');
        video.load();
        sleep(1000).then(() => play(url));
      },
      { once: true },
    );
    video.src = url;
    autoplay();
  }

  video.addEventListener('playing', () => setStatus('playing', 'playing'));
  video.addEventListener('waiting', () => setStatus('buffering', 'waiting'));
  video.addEventListener('pause', () => {
    if (!video.ended) setStatus('paused');
  });

  pollStats();
})();
