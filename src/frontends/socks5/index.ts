/** The SOCKS5 front-end's public surface. */
export { createSocks5Frontend, type Socks5FrontendOptions } from './frontend.js';
export { socks5ReplyForDialError } from './dial-error-replies.js';
export { Reply as Socks5Reply, replyName as socks5ReplyName, type ReplyCode as Socks5ReplyCode } from './codec.js';
