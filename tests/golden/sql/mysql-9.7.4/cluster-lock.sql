SELECT GET_LOCK('repltool:shop', 0);
SELECT ID, USER, HOST, TIME FROM information_schema.PROCESSLIST WHERE ID = IS_USED_LOCK('repltool:shop');
SELECT RELEASE_LOCK('repltool:shop');
